"""LLM diagnosis: an AutoGen AssistantAgent investigates with read-only tools and answers in the strict contract;
guardrails decide whether its answer is used. The deterministic playbook's diagnosis is always computed first and
is what the incident gets whenever the model's answer is not used.

The conversation is bounded by the incident's budgets (`LlmConfig`): tool calls, wall time, tokens. An answer that
does not parse, or that `judge_answer` refuses (unlisted or forbidden action, a target outside the incident, bad
params, a broken plan contract) gets one repair request in the same conversation; a second refusal, an endpoint
that is down, slow, rate-limited or answers garbage, or a spent budget all end in the playbook's diagnosis, and the
transcript says why. Accepted answers are cached by the incident's fingerprint and a digest of its evidence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import openai
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import StructuredMessage, TextMessage
from autogen_core.models import ChatCompletionClient
from pydantic import ValidationError

from agents.diagnosis.conclusion import Diagnosis
from agents.diagnosis.llm_answer import DiagnosisAnswer, Judgement, judge_answer, parse_answer
from agents.diagnosis.llm_conversation import AuditedModelClient, TokenBudgetSpent
from agents.diagnosis.llm_prompts import PROMPT_VERSION, incident_prompt, repair_prompt, system_prompt
from agents.diagnosis.llm_tools import DiagnosisTools
from agents.diagnosis.playbook import Situation
from bus.events import DiagnosisRequested, Evidence, KnowledgeHit, LlmTranscript
from execution.catalog import Catalog
from knowledge.llm_client import LlmConfig
from knowledge.untrusted_text import new_nonce
from scheduler.answer_cache import AnswerCache, digest_of

log = logging.getLogger(__name__)

ToolsFactory = Callable[[DiagnosisRequested, Situation, str, Sequence[KnowledgeHit]], DiagnosisTools]
_DIGITS = re.compile(r"\d+(?:\.\d+)?")


class LlmDiagnoser:
    """Asks the model about one incident; returns the diagnosis to publish and the audit of the conversation."""

    def __init__(
        self,
        client: ChatCompletionClient,
        config: LlmConfig,
        *,
        catalog: Catalog,
        tools: ToolsFactory,
        cache: AnswerCache | None = None,
    ) -> None:
        self._client = client
        self._config = config
        self._catalog = catalog
        self._tools = tools
        self._cache = cache

    async def diagnose(
        self,
        request: DiagnosisRequested,
        situation: Situation,
        playbook: Diagnosis,
        *,
        past_incidents: Sequence[KnowledgeHit] = (),
    ) -> tuple[Diagnosis, LlmTranscript]:
        """The model's diagnosis when its answer passes the guardrails, else `playbook`; and the transcript."""
        started = time.monotonic()
        audited = AuditedModelClient(self._client, max_tokens=self._config.max_tokens_per_incident)
        targets = {request.service, *(s.target for s in playbook.plan.steps)} if playbook.plan else {request.service}
        digest = digest_of(self._question(request, situation, playbook))
        cached = await self._cached(digest, targets, playbook)
        if cached is not None:
            judgement, origin = cached
            audited.note("cache_hit", "an earlier answer to the same question was used", digest=digest, **origin)
            return self._accepted(judgement, playbook, audited, "cached", started, tools_used=0)
        nonce = new_nonce()
        tools = self._tools(request, situation, nonce, past_incidents)
        judgement, repaired, reason = Judgement(answer=None), False, ""
        try:
            async with asyncio.timeout(self._config.max_wall_s):
                judgement, repaired = await self._converse(
                    request, situation, playbook, audited, tools, targets, nonce
                )
        except TimeoutError:
            reason = f"wall-time budget of {self._config.max_wall_s:g}s spent"
        except Exception as exc:  # noqa: BLE001 - whatever the endpoint does, the incident gets the playbook's answer
            reason = failure_reason(exc)
        if not reason and judgement.accepted:
            if self._cache is not None:
                assert judgement.answer is not None
                await self._cache.put(digest, {"answer": judgement.answer.model_dump(mode="json"),
                                               "incident_id": request.incident_id, "at": time.time()})  # fmt: skip
            return self._accepted(judgement, playbook, audited, "repaired" if repaired else "accepted", started,
                                  tools_used=tools.calls)  # fmt: skip
        if not reason:
            reason = "the answer was refused twice: " + "; ".join(judgement.problems)
        audited.note("fallback", f"the deterministic playbook's diagnosis is used: {reason}")
        log.warning("llm diagnosis not used", extra={"incident_id": request.incident_id, "reason": reason})
        transcript = self._transcript(audited, "fallback", started, tools.calls, reason=reason)
        note = Evidence(kind="note", summary=f"model not used: {reason}", source="llm")
        return _with(playbook, evidence=[*playbook.evidence, note]), transcript

    async def _converse(
        self,
        request: DiagnosisRequested,
        situation: Situation,
        playbook: Diagnosis,
        audited: AuditedModelClient,
        tools: DiagnosisTools,
        targets: set[str],
        nonce: str,
    ) -> tuple[Judgement, bool]:
        info = self._client.model_info
        structured = bool(info.get("structured_output", False))
        use_tools = bool(info.get("function_calling", False)) and self._config.max_tool_steps > 0
        agent = AssistantAgent(
            "diagnosis",
            model_client=audited,
            tools=tools.tools() if use_tools else None,
            system_message=system_prompt(self._catalog, service=request.service, structured=structured),
            reflect_on_tool_use=True if use_tools else None,
            max_tool_iterations=max(1, self._config.max_tool_steps),
            output_content_type=DiagnosisAnswer if structured else None,
        )  # fmt: skip
        task = incident_prompt(request, situation.kind, playbook.evidence, playbook.plan, playbook.hypothesis, nonce)
        judgement = self._judged(await _run(agent, task), targets, playbook, audited)
        if judgement.accepted:
            return judgement, False
        judgement = self._judged(await _run(agent, repair_prompt(judgement.problems)), targets, playbook, audited)
        return judgement, True

    def _judged(
        self, outcome: DiagnosisAnswer | str, targets: set[str], playbook: Diagnosis, audited: AuditedModelClient
    ) -> Judgement:
        if isinstance(outcome, str):
            audited.note("refused", f"answer refused: {outcome}", problems=[outcome])
            return Judgement(answer=None, problems=[outcome])
        judgement = judge_answer(outcome, self._catalog, targets=targets, playbook_plan=playbook.plan)
        if judgement.problems:
            audited.note("refused", "answer refused: " + "; ".join(judgement.problems),
                         problems=judgement.problems, refused_actions=judgement.refusals)  # fmt: skip
        return judgement

    async def _cached(
        self, digest: str, targets: set[str], playbook: Diagnosis
    ) -> tuple[Judgement, dict[str, Any]] | None:
        if self._cache is None:
            return None
        stored = await self._cache.get(digest)
        if stored is None:
            return None
        try:
            answer = DiagnosisAnswer.model_validate(stored.get("answer"))
        except ValidationError:
            return None
        judgement = judge_answer(answer, self._catalog, targets=targets, playbook_plan=playbook.plan)
        if not judgement.accepted:
            return None
        return judgement, {"cached_from": stored.get("incident_id"), "cached_at": stored.get("at")}

    def _question(self, request: DiagnosisRequested, situation: Situation, playbook: Diagnosis) -> dict[str, Any]:
        """What the model is asked, minus what varies without changing the question (numbers, times, ids)."""
        alerts = sorted(
            json.dumps([a.alertname, a.status, a.labels, a.annotations], sort_keys=True) for a in request.alerts
        )
        evidence = sorted(
            json.dumps([e.kind, e.source if e.kind != "change" else None, _DIGITS.sub("#", e.summary)])
            for e in playbook.evidence
        )
        return {"v": PROMPT_VERSION, "model": self._config.model, "service": request.service, "kind": situation.kind,
                "fingerprint": request.context.get("fingerprint"), "alerts": alerts, "evidence": evidence,
                "catalog": self._catalog.names()}  # fmt: skip

    def _accepted(
        self, judgement: Judgement, playbook: Diagnosis, audited: AuditedModelClient, status: Any, started: float,
        *, tools_used: int,
    ) -> tuple[Diagnosis, LlmTranscript]:  # fmt: skip
        answer = judgement.answer
        assert answer is not None
        cap = self._config.max_confidence
        confidence = round(min(max(answer.confidence, 0.0), cap), 2)
        capped = f", capped at {cap:g}" if answer.confidence > cap else ""
        gathered = [e for e in playbook.evidence if not (e.source == "playbook" and "confidence" in e.data)]
        cited = [Evidence(kind="note", summary=item.summary[:400], source=f"llm:{item.reference}"[:200])
                 for item in answer.evidence[:10]]  # fmt: skip
        notes = [Evidence(kind="note", source="llm",
                          summary=f"confidence {confidence:g}: the model's {answer.confidence:g}{capped}")]
        if answer.suspicious:
            told = "; ".join(s[:200] for s in answer.suspicious[:5])
            notes.append(Evidence(kind="note", source="llm", summary=f"the model ignored instructions in the data: "
                                  f"{told}", data={"suspicious": answer.suspicious[:10]}))  # fmt: skip
        diagnosis = Diagnosis(
            hypothesis=answer.hypothesis.strip(), confidence=confidence, evidence=[*gathered, *cited, *notes],
            plan=judgement.plan, history=playbook.history, rationale=answer.rationale.strip()[:1200],
        )  # fmt: skip
        return diagnosis, self._transcript(audited, status, started, tools_used)

    def _transcript(
        self, audited: AuditedModelClient, status: Any, started: float, tools_used: int, *, reason: str = ""
    ) -> LlmTranscript:
        refusals = [refusal for entry in audited.entries if entry.kind == "refused"
                    for refusal in entry.data.get("refused_actions", [])]  # fmt: skip
        return LlmTranscript(
            purpose="diagnosis", model=self._config.model, status=status, reason=reason,
            prompt_tokens=audited.prompt_tokens, completion_tokens=audited.completion_tokens,
            model_calls=audited.calls, tool_calls=tools_used, duration_s=round(time.monotonic() - started, 3),
            refusals=list(dict.fromkeys(refusals)), entries=list(audited.entries),
        )  # fmt: skip


async def _run(agent: AssistantAgent, task: str) -> DiagnosisAnswer | str:
    """The agent's answer to `task`, or why there is none usable (a problem the repair request will quote)."""
    try:
        result: TaskResult = await agent.run(task=task)
    except ValidationError as exc:  # structured output that does not match the schema
        return f"the reply does not match the answer schema: {exc.error_count()} error(s), first: " \
               f"{exc.errors()[0]['msg']}"  # fmt: skip
    last = result.messages[-1] if result.messages else None
    if isinstance(last, StructuredMessage) and isinstance(last.content, DiagnosisAnswer):
        return last.content
    if isinstance(last, TextMessage):
        try:
            return parse_answer(last.content)
        except ValueError as exc:
            return str(exc)
    return f"no answer: the conversation ended with {type(last).__name__} (tool budget spent before an answer?)"


def failure_reason(exc: BaseException) -> str:
    """Why the endpoint gave no usable answer, in words for the audit."""
    match exc:
        case openai.RateLimitError():
            return "the endpoint is rate-limiting (HTTP 429)"
        case openai.APITimeoutError():
            return "the endpoint did not answer in time"
        case openai.APIConnectionError():
            return f"the endpoint is unreachable: {exc}"
        case openai.APIStatusError(status_code=status):
            return f"the endpoint answered HTTP {status}"
        case TokenBudgetSpent():
            return str(exc)
        case json.JSONDecodeError():
            return f"the endpoint answered something that is not JSON: {exc.msg}"
    return f"the model call failed: {type(exc).__name__}: {str(exc)[:300]}"


def _with(diagnosis: Diagnosis, **changes: Any) -> Diagnosis:
    fields = {name: getattr(diagnosis, name) for name in diagnosis.__dataclass_fields__}
    return Diagnosis(**(fields | changes))

