"""The knowledge base's web UI: server-rendered pages beside the JSON API (knowledge/kb_api.py), no JavaScript.

- GET /ui?q=TEXT&type=any|runbook|postmortem|incident&service=NAME&mode=hybrid|dense|sparse&k=1..50
      the search page: the form, then the results (title, section, type, score, source, the snippet with the
      query's terms marked) and the similar past incidents from the incident memory (each linking to its page)
- GET /ui/incidents/{incident_id}
      an incident as the incident store holds it: what it is, its alerts, its timeline in order, the actions and
      outcome from its facts, its audit trail

A bad parameter answers the page with the reason and 422; a knowledge base or incident store that fails answers
the page with an error banner and 503 (an incident memory that fails only empties its panel, with a note: the
results are still worth showing). An unknown incident, or no incident store configured, is a 404 page.

Pages are Jinja2 templates (knowledge/templates/*.html) rendered with autoescaping on: every value from a
request or a store is escaped; the snippet is handed over as (text, marked) segments, never as markup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bus.events import KnowledgeHit
from knowledge.document_store import SEARCH_MODES, DocumentHit
from knowledge.incident_memory import IncidentMemory
from knowledge.incident_store import IncidentRecord
from knowledge.knowledge_base import KnowledgeBase
from knowledge.markdown_documents import DOC_TYPES
from knowledge.text_vectors import tokens

log = logging.getLogger(__name__)

ANY_TYPE = "any"
DEFAULT_K = 10
MAX_K = 50
MAX_QUERY_CHARS = 2000
MAX_SERVICE_CHARS = 200
SIMILAR_INCIDENTS = 5
TEMPLATES = Path(__file__).parent / "templates"
# The same identifiers text_vectors.tokens reads: alphanumeric runs joined by - _ .
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*")

T = TypeVar("T")


class IncidentPages(Protocol):
    """Where incident pages come from (IncidentStore is one)."""

    async def get(self, incident_id: str) -> IncidentRecord | None: ...


class BadParameter(ValueError):
    """A search parameter the page cannot take; the message says which and why."""


def highlight(text: str, terms: set[str]) -> list[tuple[str, bool]]:
    """`text` as segments (text, marked): an identifier is marked when any of its terms is one of `terms`."""
    segments: list[tuple[str, bool]] = []
    position = 0
    for match in _IDENTIFIER.finditer(text):
        if not terms.intersection(tokens(match.group())):
            continue
        if match.start() > position:
            segments.append((text[position : match.start()], False))
        segments.append((match.group(), True))
        position = match.end()
    if position < len(text):
        segments.append((text[position:], False))
    return segments


def search_parameters(q: str, type: str, service: str, mode: str, k: str) -> dict[str, Any]:
    """The search form's values, checked; raises BadParameter with a reason people can act on."""
    if len(q) > MAX_QUERY_CHARS:
        raise BadParameter(f"the query is {len(q)} characters long; at most {MAX_QUERY_CHARS} are searched")
    kind = type.strip() or ANY_TYPE
    if kind != ANY_TYPE and kind not in DOC_TYPES:
        raise BadParameter(f"unknown type {kind!r}: choose one of {', '.join((ANY_TYPE, *DOC_TYPES))}")
    chosen_mode = mode.strip() or SEARCH_MODES[0]
    if chosen_mode not in SEARCH_MODES:
        raise BadParameter(f"unknown mode {chosen_mode!r}: choose one of {', '.join(SEARCH_MODES)}")
    if len(service) > MAX_SERVICE_CHARS:
        raise BadParameter(f"the service name is longer than {MAX_SERVICE_CHARS} characters")
    given_k = k.strip()
    try:
        count = int(given_k) if given_k else DEFAULT_K
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_K:
        raise BadParameter(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")
    return {"q": q.strip(), "type": kind, "service": service.strip(), "mode": chosen_mode, "k": count}


def kb_ui_router(kb: KnowledgeBase, memory: IncidentMemory | None, incidents: IncidentPages | None) -> APIRouter:
    """The UI's routes over the knowledge base, the incident memory (similar incidents; None: no panel) and the
    incident store (incident pages; None: every incident page is a 404 saying so)."""
    router = APIRouter(tags=["knowledge base UI"])
    templates = _environment()

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = f"{request.scope.get('root_path', '')}/ui"
        html = templates.get_template(name).render(base=base, **context)
        return HTMLResponse(html, status_code=status)

    @router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    @router.get("/ui/", response_class=HTMLResponse, include_in_schema=False)
    async def search_page(
        request: Request, q: str = "", type: str = ANY_TYPE, service: str = "", mode: str = "hybrid", k: str = ""
    ) -> HTMLResponse:
        form = {"q": q, "type": type, "service": service, "mode": mode, "k": k or str(DEFAULT_K)}
        context: dict[str, Any] = {
            "form": form, "types": (ANY_TYPE, *DOC_TYPES), "modes": SEARCH_MODES, "max_k": MAX_K,
            "searched": False, "results": [], "incidents": [], "memory_error": "", "error": "", "error_kind": "",
            "with_memory": memory is not None,
        }  # fmt: skip
        try:
            params = search_parameters(q, type, service, mode, k)
        except BadParameter as exc:
            log.info("search parameter refused", extra={"reason": str(exc)})
            context.update(error=str(exc), error_kind="bad-parameter")
            return page(request, "search.html", 422, **context)
        if not params["q"]:
            return page(request, "search.html", **context)
        filters = {name: params[name] for name in ("type", "service") if params[name] and params[name] != ANY_TYPE}
        memory_filters = {"service": params["service"]} if params["service"] else None
        async with asyncio.TaskGroup() as group:
            searching = group.create_task(
                _attempt(kb.search(params["q"], params["k"], mode=params["mode"], filters=filters))
            )
            remembering = group.create_task(
                _attempt(memory.search(params["q"], SIMILAR_INCIDENTS, memory_filters)) if memory else _nothing()
            )
        found, failure = searching.result()
        similar, memory_failure = remembering.result()
        if memory_failure is not None:
            log.warning("incident memory search failed", extra={"error": _describe(memory_failure)})
            context["memory_error"] = "similar incidents are unavailable: the incident memory did not answer"
        context.update(searched=True, incidents=[_incident_view(hit, request) for hit in similar or []])
        if failure is not None:
            log.warning("knowledge base search failed", extra={"error": _describe(failure)})
            context.update(error=f"the knowledge base is unavailable: {_describe(failure)}", error_kind="unavailable")
            return page(request, "search.html", 503, **context)
        terms = set(tokens(params["q"]))
        context["results"] = [_result_view(hit, terms) for hit in found or []]
        return page(request, "search.html", **context)

    @router.get("/ui/incidents/{incident_id:path}", response_class=HTMLResponse, include_in_schema=False)
    async def incident_page(request: Request, incident_id: str) -> HTMLResponse:
        if incidents is None:
            message = "no incident store is configured for this knowledge base: incident pages are not available"
            return page(request, "message.html", 404, title="No incident store", message=message)
        record, failure = await _attempt(incidents.get(incident_id))
        if failure is not None:
            log.warning("incident store read failed", extra={"incident_id": incident_id, "error": _describe(failure)})
            message = f"the incident store is unavailable: {_describe(failure)}"
            return page(request, "message.html", 503, title="Incident store unavailable", message=message)
        if record is None:
            message = f"there is no incident {incident_id!r}"
            return page(request, "message.html", 404, title="Incident not found", message=message)
        return page(request, "incident.html", **_record_view(record))

    return router


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True,
    )  # fmt: skip
    environment.filters["when"] = _when
    return environment


async def _attempt(awaitable: Awaitable[T]) -> tuple[T | None, Exception | None]:
    """The awaitable's value, or the exception it raised (cancellation still propagates)."""
    try:
        return await awaitable, None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the page says what failed
        return None, exc


async def _nothing() -> tuple[list[KnowledgeHit], None]:
    return [], None


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {text}"


def _result_view(hit: DocumentHit, terms: set[str]) -> dict[str, Any]:
    return {
        "title": hit.title or hit.source, "section": hit.section, "type": hit.type, "score": f"{hit.score:.3f}",
        "source": hit.source, "snippet": highlight(hit.snippet, terms),
        "alertnames": list(hit.payload.get("alertnames") or []), "services": list(hit.payload.get("services") or []),
    }  # fmt: skip


def _incident_view(hit: KnowledgeHit, request: Request) -> dict[str, Any]:
    payload = hit.payload
    incident_id = str(payload.get("incident_id") or hit.doc_id)
    base = f"{request.scope.get('root_path', '')}/ui"
    return {
        "incident_id": incident_id, "href": f"{base}/incidents/{quote(incident_id, safe='')}",
        "title": hit.title or incident_id, "score": f"{hit.score:.3f}", "outcome": payload.get("outcome") or "unknown",
        "verified": bool(payload.get("verified")), "hypothesis": payload.get("hypothesis") or "",
        "closed_at": _parsed_time(payload.get("closed_at")), "service": payload.get("service") or "",
        "actions": [_step(a) for a in payload.get("actions") or [] if isinstance(a, Mapping)],
    }  # fmt: skip


def _step(entry: Mapping[str, Any]) -> dict[str, str]:
    """An action as a line: a memory payload's {action, target, params} or a record's {step: {...}, status}."""
    step = entry.get("step") if isinstance(entry.get("step"), Mapping) else entry
    params = step.get("params") or {}
    return {
        "action": str(step.get("action") or "?"), "target": str(step.get("target") or ""),
        "params": json.dumps(params, sort_keys=True, default=str) if params else "",
        "status": str(entry.get("status") or ""),
    }  # fmt: skip


def _record_view(record: IncidentRecord) -> dict[str, Any]:
    facts = record.facts
    diagnosis = facts.get("diagnosis") if isinstance(facts.get("diagnosis"), Mapping) else {}
    verified = facts.get("verified")
    return {
        "record": record, "state": str(record.state.value), "kind": facts.get("kind") or "",
        "outcome": facts.get("outcome") or "", "verified": None if verified is None else bool(verified),
        "hypothesis": (diagnosis or {}).get("hypothesis") or "",
        "actions": [_step(a) for a in facts.get("actions") or [] if isinstance(a, Mapping)],
        "alerts": [{"alertname": a.alertname, "status": str(a.status), "labels": ", ".join(
            f"{k}={v}" for k, v in sorted(a.labels.items()))} for a in record.alerts],
        "audit": [{"at": e.at, "actor": e.actor, "action": e.action,
                   "detail": json.dumps(e.detail, sort_keys=True, default=str) if e.detail else ""}
                  for e in record.audit],
    }  # fmt: skip


def _parsed_time(value: Any) -> datetime | str:
    """An ISO time from a payload as a datetime (shown like the others), else as it is."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return value


def _when(value: datetime | str | None) -> str:
    """A time for people: UTC to the second."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
