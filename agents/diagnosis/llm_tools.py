"""The model's read-only tools: a Prometheus query, a knowledge search, the service's recent changes, a summary of
its log, and the incident's history. None of them changes anything; each is bounded in time and size.

Every result goes back to the model fenced as data (`knowledge.untrusted_text`): logs, runbooks and label values
may carry text written to steer a model. Calls beyond the incident's tool budget are answered with a refusal, not
run. An expected failure (Prometheus not configured, knowledge silent, no log) is a result that says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from autogen_core.tools import FunctionTool

from agents.diagnosis.knowledge_replies import KnowledgeReply
from agents.diagnosis.playbook import Situation
from bus.events import ChangeRecorded, DiagnosisRequested, Event, KnowledgeHit
from execution.prometheus_queries import MetricsQueries
from knowledge.log_templates import LogTailSource, summarize_log
from knowledge.untrusted_text import fence

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 3000
_MAX_QUERY_CHARS = 500
_SAMPLES_SHOWN = 8
_HITS_SHOWN = 5


class KnowledgeAsker(Protocol):
    async def ask(
        self, cause: Event, query: str, *, k: int, kind: str | None, actions: Sequence[str], timeout_s: float
    ) -> KnowledgeReply: ...


class ChangeReader(Protocol):
    async def recent(self, service: str, within_s: float, *, limit: int = 20) -> list[ChangeRecorded]: ...


class DiagnosisTools:
    """The tools of one incident's conversation, with its tool budget and its prompt's fence nonce."""

    def __init__(
        self,
        request: DiagnosisRequested,
        situation: Situation,
        *,
        metrics: MetricsQueries | None,
        changes: ChangeReader,
        change_lookback_s: float,
        logs: LogTailSource,
        knowledge: KnowledgeAsker,
        knowledge_k: int,
        knowledge_timeout_s: float,
        past_incidents: Sequence[KnowledgeHit],
        nonce: str,
        max_calls: int,
    ) -> None:
        self._request = request
        self._situation = situation
        self._metrics = metrics
        self._changes = changes
        self._lookback_s = change_lookback_s
        self._logs = logs
        self._knowledge = knowledge
        self._k = knowledge_k
        self._knowledge_timeout_s = knowledge_timeout_s
        self._past = list(past_incidents)
        self._nonce = nonce
        self._max_calls = max_calls
        self.calls = 0

    def tools(self) -> list[FunctionTool]:
        # strict: every parameter required, no extra ones, so the tools combine with strict structured output.
        return [
            FunctionTool(self.query_prometheus, name="query_prometheus", strict=True,
                         description="Run a read-only PromQL instant query; returns up to 8 samples."),
            FunctionTool(self.search_knowledge, name="search_knowledge", strict=True,
                         description="Search the runbooks, postmortems and past incidents; returns the best passages."),
            FunctionTool(self.recent_changes, name="recent_changes", strict=True,
                         description="The service's deploys and config changes of the last hour, newest first."),
            FunctionTool(self.log_summary, name="log_summary", strict=True,
                         description="The service's recent log lines as templates with counts, errors first."),
            FunctionTool(self.incident_history, name="incident_history", strict=True,
                         description="This incident's alerts and context, and similar past incidents' outcomes."),
        ]  # fmt: skip

    def _take(self, name: str) -> str | None:
        """None when the call may run; otherwise the refusal to answer with."""
        self.calls += 1
        if self.calls > self._max_calls:
            log.info("tool budget spent", extra={"tool": name, "max_calls": self._max_calls,
                                                 "incident_id": self._request.incident_id})  # fmt: skip
            return f"refused: the tool budget of {self._max_calls} calls is spent; answer with what you have"
        return None

    def _fenced(self, name: str, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        return fence(f"tool:{name}", text, self._nonce, max_chars=MAX_RESULT_CHARS)

    async def query_prometheus(self, query: str) -> str:
        """query: a PromQL expression (instant query, read-only)."""
        if (refused := self._take("query_prometheus")) is not None:
            return refused
        if not query.strip() or len(query) > _MAX_QUERY_CHARS:
            return f"error: the query must be 1 to {_MAX_QUERY_CHARS} characters"
        if self._metrics is None:
            return "error: Prometheus is not configured for diagnosis"
        result = await self._metrics.instant(query)
        shown = {"status": result.status, "error": result.error,
                 "samples": [s.model_dump() for s in result.samples[:_SAMPLES_SHOWN]],
                 "more_samples": max(0, len(result.samples) - _SAMPLES_SHOWN)}  # fmt: skip
        return self._fenced("query_prometheus", shown)

    async def search_knowledge(self, query: str) -> str:
        """query: what to look for, in words (alert names, symptoms, services)."""
        if (refused := self._take("search_knowledge")) is not None:
            return refused
        if not query.strip():
            return "error: the query is empty"
        reply = await self._knowledge.ask(
            self._request, query[:_MAX_QUERY_CHARS], k=self._k, kind=self._situation.kind, actions=[],
            timeout_s=self._knowledge_timeout_s,
        )  # fmt: skip
        if reply.answer is None:
            return f"error: knowledge did not answer ({reply.status}: {reply.error})"
        return self._fenced("search_knowledge", [_hit(hit) for hit in reply.answer.hits[:_HITS_SHOWN]])

    async def recent_changes(self) -> str:
        """The incident's service's recent changes."""
        if (refused := self._take("recent_changes")) is not None:
            return refused
        changes = await self._changes.recent(self._situation.service, self._lookback_s, limit=10)
        rows = [{"kind": c.kind, "version": c.version, "previous_version": c.previous_version,
                 "author": c.author, "description": c.description, "at": c.occurred_at.isoformat()}
                for c in changes]  # fmt: skip
        return self._fenced("recent_changes", rows or "no changes recorded in the lookback window")

    async def log_summary(self) -> str:
        """The incident's service's log, summarized."""
        if (refused := self._take("log_summary")) is not None:
            return refused
        summary = await summarize_log(self._logs, self._situation.service, self._situation.labels.get("log_file"))
        return self._fenced("log_summary", summary.as_text(max_chars=MAX_RESULT_CHARS))

    async def incident_history(self) -> str:
        """This incident so far, and how similar past incidents ended."""
        if (refused := self._take("incident_history")) is not None:
            return refused
        request = self._request
        history = {
            "incident_id": request.incident_id,
            "service": request.service,
            "kind": request.kind,
            "severity": request.severity,
            "alerts": [{"alertname": a.alertname, "status": a.status, "labels": a.labels,
                        "starts_at": a.starts_at.isoformat() if a.starts_at else None} for a in request.alerts],
            "context": request.context,
            "similar_past_incidents": [_hit(hit) for hit in self._past[:_HITS_SHOWN]],
        }  # fmt: skip
        return self._fenced("incident_history", history)


def _hit(hit: KnowledgeHit) -> dict[str, Any]:
    shown: dict[str, Any] = {"type": hit.type, "title": hit.title, "score": round(hit.score, 3),
                             "source": hit.source, "snippet": hit.snippet[:400]}  # fmt: skip
    for key in ("section", "outcome", "actions"):
        if key in hit.payload:
            shown[key] = hit.payload[key]
    return shown
