"""The approvals page: people read pending escalations and answer them, in a browser, without JavaScript.

- GET  /approvals                      the pending approvals (viewer+), else the sign-in form
- POST /approvals/login                form `token`: sets the HttpOnly, SameSite=Strict `opswarm_token` cookie, 303 back
- POST /approvals/logout               clears it
- POST /approvals/{incident_id}/decide form `decision`, `action_id`, `comment`, `csrf` (approver): the decision goes
                                       out as the cookie's identity (via="web"), then 303 to the page with a message
- GET  /approvals/links/{token}        a signed one-time link: what it would decide, by whom, until when, a button
- POST /approvals/links/{token}        uses the link up and sends its decision as its recipient (via="link")

Forms carry a CSRF token (an HMAC of the cookie's token) and POSTs from another origin are refused; messages after a
decision travel in the redirect's query string signed with the same key, so nobody can put words on the page.
Pages are Jinja2 templates (agents/coordination/templates) with autoescaping; every response forbids framing and
scripts (Content-Security-Policy) and is not cached.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import SecretStr

from agents.coordination.approvals_http import NO_TOKENS, TOKEN_COOKIE, UNKNOWN_TOKEN, refusal
from agents.coordination.decisions import Publisher, pending_action, request_decision
from bus.incident_states import IncidentState
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.escalations.access_tokens import ApiToken, Identity, identify
from scheduler.escalations.approval_links import ApprovalLinks, LinkOutcome

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PAGE_LIMIT = 100
MAX_FORM_BYTES = 16_384
MAX_COMMENT_CHARS = 2000
SESSION_MAX_AGE_S = 12 * 3600
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}  # fmt: skip
_LINK_STATUS = {"invalid": 403, "expired": 410, "used": 410}
_VERB = {"approve": "approve", "reject": "reject"}


class FormKeys:
    """The page's HMAC key (from the link secret, else random per process): CSRF tokens and signed messages."""

    def __init__(self, secret: SecretStr | None) -> None:
        raw = secret.get_secret_value().encode() if secret is not None else secrets.token_bytes(32)
        self._key = hmac.new(raw, b"opswarm approvals page v1", hashlib.sha256).digest()

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def csrf(self, session_token: str) -> str:
        return self._mac("csrf", session_token)

    def csrf_ok(self, session_token: str, given: str) -> bool:
        return hmac.compare_digest(self.csrf(session_token), given)

    def flash(self, kind: str, text: str) -> dict[str, str]:
        return {"done": text, "kind": kind, "sig": self._mac("flash", kind, text)}

    def flash_ok(self, kind: str, text: str, given: str) -> bool:
        return hmac.compare_digest(self._mac("flash", kind, text), given)


def approvals_page_router(
    store: IncidentStore, publisher: Publisher, tokens: Sequence[ApiToken], *, links: ApprovalLinks | None = None,
    form_secret: SecretStr | None = None,
) -> APIRouter:  # fmt: skip
    """The page's routes; `links` None: signed links are off (their pages say so)."""
    router = APIRouter(tags=["approvals page"], include_in_schema=False)
    templates = _environment()
    keys = FormKeys(form_secret)
    known = tuple(tokens)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("identity", None)
        context.setdefault("csrf", "")
        html = templates.get_template(name).render(base=_base(request), **context)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def message(request: Request, status: int, title: str, text: str, kind: str = "error") -> HTMLResponse:
        return render(request, "message.html", status, title=title, message=text, kind=kind, code=status)

    def session(request: Request) -> tuple[str, Identity | None]:
        token = request.cookies.get(TOKEN_COOKIE) or ""
        return token, identify(known, token)

    def sign_in(request: Request, status: int = 200, error: str = "") -> HTMLResponse:
        if not known:
            return render(request, "login.html", 401, error=NO_TOKENS, can_sign_in=False)
        return render(request, "login.html", status, error=error, can_sign_in=True)

    @router.get("/approvals", response_class=HTMLResponse)
    async def approvals(request: Request, done: str = "", kind: str = "", sig: str = "") -> HTMLResponse:
        token, identity = session(request)
        if identity is None:
            stale = "your sign-in is no longer valid: " + UNKNOWN_TOKEN if token else ""
            return sign_in(request, 401 if token else 200, stale)
        flash = {"kind": kind, "text": done} if done and keys.flash_ok(kind, done, sig) else None
        may_decide = identity.may("approver")
        context = {"identity": identity, "csrf": keys.csrf(token), "flash": flash, "may_decide": may_decide}
        try:
            records = await store.list(state=IncidentState.AWAITING_APPROVAL, limit=PAGE_LIMIT)
        except Exception as exc:  # noqa: BLE001 - the page says the store failed
            log.warning("approvals page could not read incidents", extra={"error": repr(exc)})
            error = f"the incident store is unavailable ({type(exc).__name__}); try again shortly"
            return render(request, "approvals.html", 503, items=[], error=error, **context)
        items = [view for i, r in enumerate(records) if (view := approval_view(r, _base(request), i)) is not None]
        return render(request, "approvals.html", items=items, error="", **context)

    @router.post("/approvals/login")
    async def login(request: Request) -> Response:
        form, refused = await _form(request)
        if refused is not None:
            return message(request, refused[0], "Sign-in refused", refused[1])
        token = form.get("token", "").strip()
        identity = identify(known, token)
        if identity is None:
            log.info("approvals page sign-in refused", extra={"tokens_configured": len(known)})
            return sign_in(request, 401, "that token is not recognised: " + UNKNOWN_TOKEN if token else "")
        log.info("approvals page sign-in", extra={"by": identity.name, "role": identity.role})
        response = RedirectResponse(_base(request), status_code=303, headers=_HEADERS)
        response.set_cookie(TOKEN_COOKIE, token, max_age=SESSION_MAX_AGE_S, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
        return response

    @router.post("/approvals/logout")
    async def logout(request: Request) -> Response:
        form, refused = await _form(request)
        token, _ = session(request)
        if refused is None and not (token and keys.csrf_ok(token, form.get("csrf", ""))):
            refused = (403, "the sign-out form was stale or not from this page")
        if refused is not None:
            return message(request, refused[0], "Sign-out refused", refused[1])
        response = RedirectResponse(_base(request), status_code=303, headers=_HEADERS)
        response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.post("/approvals/{incident_id}/decide")
    async def decide(request: Request, incident_id: str) -> Response:
        form, refused = await _form(request)
        token, identity = session(request)
        if refused is None:
            refused = refusal(known, identity, "approver", "approving or rejecting")
        if refused is None and not keys.csrf_ok(token, form.get("csrf", "")):
            refused = (403, "this form is stale or was not sent by the approvals page: reload the page and try again")
        decision, comment = form.get("decision", ""), form.get("comment", "").strip()
        if refused is None and (decision not in _VERB or len(comment) > MAX_COMMENT_CHARS):
            refused = (400, f"a decision is approve or reject, with a comment of at most {MAX_COMMENT_CHARS} chars")
        if refused is not None:
            log.info("approvals page decision refused", extra={"incident_id": incident_id, "status": refused[0]})
            return message(request, refused[0], "Decision refused", refused[1])
        assert identity is not None
        try:
            result = await request_decision(
                store, publisher, incident_id, decision, identity.name, comment,  # type: ignore[arg-type]
                via="web", action_id=form.get("action_id") or None,
            )  # fmt: skip
            flash = keys.flash("ok" if result.status == "accepted" else "error", result.message)
        except Exception as exc:  # noqa: BLE001 - the person is told it was not sent
            log.warning("approvals page decision not sent", extra={"incident_id": incident_id, "error": repr(exc)})
            flash = keys.flash("error", f"the decision was not sent ({type(exc).__name__}): try again")
        return RedirectResponse(f"{_base(request)}?{urlencode(flash)}", status_code=303, headers=_HEADERS)

    @router.get("/approvals/links/{token}", response_class=HTMLResponse)
    async def show_link(request: Request, token: str) -> HTMLResponse:
        if links is None:
            return message(request, 404, "Links are off", "signed approval links are not enabled on this agent")
        outcome, failed = await _attempt_link(links.peek(token))
        if failed or not outcome.ok:
            return _link_refused(request, outcome, failed)
        try:
            record = await store.get(outcome.incident_id or "")
        except Exception as exc:  # noqa: BLE001 - the page says the store failed
            log.warning("link page could not read the incident", extra={"error": repr(exc)})
            return message(request, 503, "Incident store unavailable", "the incident could not be read: try again")
        entry = pending_action(record) if record and record.state is IncidentState.AWAITING_APPROVAL else None
        if record is None or entry is None or entry["action_id"] != outcome.action_id:
            state = "unknown" if record is None else str(record.state)
            text = f"incident {outcome.incident_id} is {state}: action {outcome.action_id} no longer awaits a decision"
            return message(request, 409, "Nothing to decide", text)
        step, risk = entry.get("step") or {}, entry.get("risk") or {}
        assert outcome.decision is not None and outcome.expires_at is not None
        return render(
            request, "link.html", link=outcome, verb=_VERB[outcome.decision], action=step.get("action", "?"),
            target=step.get("target", "?"), title=record.title, service=record.service,
            risk={"tier": risk.get("tier", "?"), "score": _number(risk.get("score"))} if risk else None,
            brief=entry.get("brief", ""), expires=outcome.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            post_to=f"{_base(request)}/links/{quote(token, safe='')}",
        )  # fmt: skip

    @router.post("/approvals/links/{token}", response_class=HTMLResponse)
    async def use_link(request: Request, token: str) -> HTMLResponse:
        if links is None:
            return message(request, 404, "Links are off", "signed approval links are not enabled on this agent")
        outcome, failed = await _attempt_link(links.redeem(token))
        if failed or not outcome.ok:
            return _link_refused(request, outcome, failed)
        assert outcome.decision is not None and outcome.recipient is not None
        try:
            result = await request_decision(
                store, publisher, outcome.incident_id or "", outcome.decision, outcome.recipient, via="link",
                action_id=outcome.action_id,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the link is given back and the person told
            log.warning("link decision not sent", extra={"incident_id": outcome.incident_id, "error": repr(exc)})
            await _attempt_link(links.release(outcome))
            text = f"the decision was not sent ({type(exc).__name__}); the link still works: try again shortly"
            return message(request, 503, "Not sent", text)
        if result.status != "accepted":
            return message(request, 409, "Nothing to decide", result.message)
        return message(request, 200, "Decision sent", f"{result.message}, as {outcome.recipient}", kind="ok")

    def _link_refused(request: Request, outcome: LinkOutcome, failed: bool) -> HTMLResponse:
        if failed:
            return message(request, 503, "Link not checked", "the link could not be checked just now: try again")
        titles = {"invalid": "Invalid link", "expired": "Link expired", "used": "Link already used"}
        log.info("approval link refused", extra={"status": outcome.status, "incident_id": outcome.incident_id})
        return message(request, _LINK_STATUS[outcome.status], titles[outcome.status], outcome.message)

    return router


def approval_view(record: IncidentRecord, base: str, index: int) -> dict[str, Any] | None:
    """What the page shows of one incident awaiting a decision; None when it awaits none."""
    entry = pending_action(record) if record.state is IncidentState.AWAITING_APPROVAL else None
    if entry is None:
        return None
    facts = record.facts
    step, risk = _mapping(entry.get("step")), _mapping(entry.get("risk"))
    diagnosis = _mapping(facts.get("diagnosis"))
    plan = _mapping(facts.get("plan"))
    evidence = [_mapping(e) for e in diagnosis.get("evidence") or [] if isinstance(e, Mapping)]
    verify = _mapping(plan.get("verify"))
    return {
        "incident_id": record.incident_id, "key": index, "title": record.title, "service": record.service,
        "severity": record.severity, "updated_at": record.updated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "decide_url": f"{base}/{quote(record.incident_id, safe='')}/decide",
        "action": {
            "action_id": entry["action_id"], "action": step.get("action", "?"), "target": step.get("target", "?"),
            "params": _params(step.get("params")), "tier": risk.get("tier", "?"), "score": _number(risk.get("score")),
            "breakdown": [(k, _signed(v)) for k, v in sorted(_mapping(risk.get("breakdown")).items())],
            "reasons": [str(r) for r in risk.get("reasons") or []],
        },
        "plan": [_plan_step(a, entry["action_id"]) for a in facts.get("actions") or [] if isinstance(a, Mapping)],
        "rollback": [_plan_step({"step": s}, "") for s in plan.get("rollback") or [] if isinstance(s, Mapping)],
        "verify": (f"{verify.get('query')} {verify.get('comparator')} {verify.get('threshold')} "
                   f"over {verify.get('window_s')} s") if verify else "",
        "brief": str(entry.get("brief") or ""),
        "diagnosis": {
            "hypothesis": str(diagnosis.get("hypothesis") or ""), "confidence": _number(diagnosis.get("confidence")),
            "method": str(diagnosis.get("method") or ""), "rationale": str(diagnosis.get("rationale") or ""),
        },
        "evidence": [{"kind": str(e.get("kind", "?")), "summary": str(e.get("summary", "")),
                      "source": str(e.get("source") or ""), "score": _number(e.get("score"))} for e in evidence],
        "similar": [_similar(e) for e in evidence if e.get("kind") == "incident"],
    }  # fmt: skip


def _plan_step(entry: Mapping[str, Any], pending_id: str) -> dict[str, Any]:
    step, risk = _mapping(entry.get("step")), _mapping(entry.get("risk"))
    return {
        "action": str(step.get("action", "?")), "target": str(step.get("target", "?")),
        "params": _params(step.get("params")), "tier": str(risk.get("tier") or ""),
        "score": _number(risk.get("score")) if risk else "", "status": str(entry.get("status") or ""),
        "pending": bool(pending_id) and entry.get("action_id") == pending_id,
    }  # fmt: skip


def _similar(evidence: Mapping[str, Any]) -> dict[str, str]:
    data = _mapping(evidence.get("data"))
    actions = data.get("actions") or []
    return {
        "title": str(data.get("title") or evidence.get("summary") or "?"), "outcome": str(data.get("outcome") or ""),
        "actions": ", ".join(str(a) for a in actions) if isinstance(actions, list) else str(actions),
        "score": _number(evidence.get("score")) if evidence.get("score") is not None else "",
    }  # fmt: skip


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _params(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str) if value else ""


def _number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _signed(value: object) -> str:
    return f"{value:+.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _base(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/approvals"


async def _form(request: Request) -> tuple[dict[str, str], tuple[int, str] | None]:
    """The POSTed form (first value of each field), or why it is refused: another origin, not a form, too big."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        return {}, (403, "this form was posted from another site")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}, (400, "expected a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}, (413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}, (400, "the form could not be read")
    return {name: values[0] for name, values in fields.items()}, None


async def _attempt_link(call: Any) -> tuple[Any, bool]:
    """(the call's result, False), or (a placeholder, True) when Redis failed (the page says so)."""
    try:
        return await call, False
    except Exception as exc:  # noqa: BLE001 - Redis down or slow: the page says the link could not be checked
        log.warning("approval link check failed", extra={"error": repr(exc)})
        return LinkOutcome("invalid", "the link could not be checked"), True


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True,
    )  # fmt: skip
