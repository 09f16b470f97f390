"""Wiring: remember changes; diagnose each request from the playbook and the evidence gathered; publish the result.

Two consumers: ChangeRecorded into the change history (at-least-once; recording is idempotent by event id), and
DiagnosisRequested into DiagnosisCompleted (exactly-once: the result and the consumed offset commit together).
Questions to knowledge go out through a publisher of their own, outside that transaction; the answers come back
through the knowledge listener, a background task of the agent. Evidence is gathered concurrently, every source
under its own timeout, and a source that fails becomes a note in the evidence rather than a failed diagnosis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from autogen_core.models import ChatCompletionClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from agents.diagnosis.conclusion import Diagnosis, Gathered, ProbeReading, conclude
from agents.diagnosis.default_rules import DEFAULT_PLAYBOOK
from agents.diagnosis.knowledge_query import knowledge_query
from agents.diagnosis.knowledge_replies import KnowledgeReplies
from agents.diagnosis.llm_diagnosis import LlmDiagnoser
from agents.diagnosis.llm_tools import DiagnosisTools
from agents.diagnosis.playbook import (
    Playbook,
    RenderedProbe,
    Situation,
    draft_plan,
    load_rules,
    render_probes,
    situation_of,
)
from agents.diagnosis.settings import DiagnosisSettings
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.errors import NonRetriableError, RetriableError
from bus.events import (
    AnyEvent,
    ChangeRecorded,
    DiagnosisCompleted,
    DiagnosisRequested,
    Event,
    Evidence,
    KnowledgeHit,
    LlmTranscript,
)
from bus.producer import EventPublisher
from bus.topics import CHANGES, DIAGNOSIS
from execution.catalog import Catalog, default_catalog
from execution.prometheus_queries import MetricsQueries, PrometheusQueries
from knowledge.llm_client import build_model_client
from knowledge.log_excerpts import FileLogSource, LogSource
from scheduler.agent_http import agent_http
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.answer_cache import AnswerCache
from scheduler.change_history import ChangeHistory
from scheduler.heartbeats import HeartbeatRegistry

log = logging.getLogger(__name__)

AGENT = "diagnosis"
_RECENT_CHANGES_LIMIT = 10


class Diagnoser:
    """Turns one DiagnosisRequested into one DiagnosisCompleted."""

    def __init__(
        self,
        settings: DiagnosisSettings,
        *,
        playbook: Playbook,
        catalog: Catalog,
        changes: ChangeHistory,
        metrics: MetricsQueries | None,
        logs: LogSource,
        knowledge: KnowledgeReplies,
        llm: LlmDiagnoser | None = None,
    ) -> None:
        self._settings = settings
        self._llm = llm
        self._playbook = playbook
        self._catalog = catalog
        self._changes = changes
        self._metrics = metrics
        self._logs = logs
        self._knowledge = knowledge

    async def diagnose(self, request: DiagnosisRequested) -> DiagnosisCompleted:
        try:
            diagnosis, kind, transcript = await self._diagnose(request)
        except Exception as exc:  # a bug must not leave the incident waiting: say so, and coordination escalates
            log.exception("diagnosis failed", extra={"incident_id": request.incident_id})
            failure = f"diagnosis failed: {type(exc).__name__}: {exc}"
            diagnosis = Diagnosis(failure, 0.0, [Evidence(kind="note", summary=failure)], None)
            kind, transcript = request.kind, None
        method = "llm" if transcript is not None and transcript.status != "fallback" else "deterministic"
        log.info(
            "diagnosis completed",
            extra={"incident_id": request.incident_id, "kind": kind, "confidence": diagnosis.confidence,
                   "planned": diagnosis.plan is not None, "method": method,
                   "llm_status": transcript.status if transcript is not None else None},
        )  # fmt: skip
        return request.follow(
            DiagnosisCompleted,
            produced_by=AGENT,
            hypothesis=diagnosis.hypothesis,
            confidence=diagnosis.confidence,
            evidence=diagnosis.evidence,
            plan=diagnosis.plan,
            kind=kind,
            history=diagnosis.history,
            method=method,
            rationale=diagnosis.rationale,
            llm=transcript,
        )

    async def _diagnose(self, request: DiagnosisRequested) -> tuple[Diagnosis, str, LlmTranscript | None]:
        changes, notes = await self._recent_changes(request.service)
        situation = situation_of(request, changes)
        selection = self._playbook.select(situation)
        probes: list[RenderedProbe] = []
        if selection is not None:
            probes, probe_problems = render_probes(selection)
            notes.extend(probe_problems)
            told = selection.render_lenient(selection.rule.hypothesis)
        else:
            told = f"no playbook rule for {situation.kind}"
        async with asyncio.TaskGroup() as group:
            readings = group.create_task(self._read_probes(probes, notes))
            logs = group.create_task(
                self._logs.excerpts(
                    situation.service, log_file=situation.labels.get("log_file"), max_lines=self._settings.log_lines
                )
            )
            knowledge = group.create_task(
                self._knowledge.ask(
                    request,
                    knowledge_query(request, situation, told),
                    k=self._settings.knowledge_k,
                    kind=situation.kind,
                    actions=self._playbook.candidate_actions(situation.kind),
                    timeout_s=self._settings.knowledge_timeout_s,
                )
            )
        gathered = Gathered(
            readings=readings.result(), changes=changes, logs=logs.result(), knowledge=knowledge.result(), notes=notes
        )
        draft = draft_plan(selection) if selection is not None else None
        diagnosis = conclude(situation, selection, draft, gathered, self._catalog, now=datetime.now(UTC))
        if self._llm is None:
            return diagnosis, situation.kind, None
        answer = gathered.knowledge.answer
        past = [hit for hit in answer.hits if hit.type == "incident"] if answer is not None else []
        diagnosis, transcript = await self._llm.diagnose(request, situation, diagnosis, past_incidents=past)
        return diagnosis, situation.kind, transcript

    async def _recent_changes(self, service: str) -> tuple[list[ChangeRecorded], list[str]]:
        try:
            changes = await self._changes.recent(
                service, self._settings.change_lookback_s, limit=_RECENT_CHANGES_LIMIT
            )
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("change history unavailable", extra={"service": service, "error": repr(exc)})
            return [], [f"change history unavailable: {type(exc).__name__}"]
        return changes, []

    async def _read_probes(self, probes: list[RenderedProbe], notes: list[str]) -> list[ProbeReading]:
        if not probes:
            return []
        metrics = self._metrics
        if metrics is None:
            notes.append("prometheus not configured: no metric evidence")
            return []
        results = await asyncio.gather(*(metrics.instant(probe.query) for probe in probes))
        return [ProbeReading(probe, result) for probe, result in zip(probes, results, strict=True)]


def build_consumers(settings: DiagnosisSettings, diagnoser: Diagnoser, history: ChangeHistory) -> list[EventConsumer]:
    async def record_change(event: AnyEvent, ctx: RecordContext) -> None:
        assert isinstance(event, ChangeRecorded)
        try:
            await history.record(event)
        except ValueError as exc:
            raise NonRetriableError(str(exc)) from exc
        except RedisError as exc:
            raise RetriableError(f"change history unavailable: {exc!r}") from exc

    async def diagnose(event: AnyEvent, ctx: RecordContext) -> list[Event]:
        assert isinstance(event, DiagnosisRequested)
        return [await diagnoser.diagnose(event)]

    changes = EventConsumer(
        settings.kafka,
        name=f"diagnosis-changes-{settings.instance_id}",
        group_id=f"{settings.consumer_group}.changes",
        topics=[settings.kafka.topic(CHANGES)],
        handler=record_change,
        delivery=Delivery.AT_LEAST_ONCE,
        event_types=frozenset({"change.recorded"}),
        start_at=settings.consumer_start,
    )
    requests = EventConsumer(
        settings.kafka,
        name=f"diagnosis-{settings.instance_id}",
        group_id=settings.consumer_group,
        topics=[settings.kafka.topic(DIAGNOSIS)],
        handler=diagnose,
        delivery=Delivery.EXACTLY_ONCE,
        transactional_id=f"opswarm-{settings.instance_id}",
        event_types=frozenset({"diagnosis.requested"}),
        start_at=settings.consumer_start,
    )
    return [changes, requests]


def playbook_of(settings: DiagnosisSettings) -> Playbook:
    """The standard playbook, with the playbook file's rules first (ValueError when the file is not valid)."""
    if settings.playbook_file is None:
        return DEFAULT_PLAYBOOK
    return DEFAULT_PLAYBOOK.with_rules_first(load_rules(Path(settings.playbook_file)))


class DiagnosisAgent:
    """The diagnosis process's parts; `run` runs them until stop, `wait_ready` tells when they all listen."""

    def __init__(
        self, settings: DiagnosisSettings, redis: Redis, *, model_client: ChatCompletionClient | None = None
    ) -> None:
        """`model_client`: the model of the LLM path (None: the deterministic path); the caller closes it."""
        self._settings = settings
        self._redis = redis
        self._publisher = EventPublisher(settings.kafka, client_id=f"diagnosis-queries-{settings.instance_id}")
        self._knowledge = KnowledgeReplies(
            settings.kafka, self._publisher, client_id=f"diagnosis-answers-{settings.instance_id}", produced_by=AGENT
        )
        self._metrics = (
            PrometheusQueries(settings.prometheus_url, timeout_s=settings.prometheus_timeout_s)
            if settings.prometheus_url
            else None
        )
        self._history = ChangeHistory(
            redis,
            settings.redis_prefix,
            max_per_service=settings.changes_kept_per_service,
            keep_s=settings.changes_kept_s,
        )
        logs = FileLogSource(settings.log_roots, timeout_s=settings.log_timeout_s)
        diagnoser = Diagnoser(
            settings,
            playbook=playbook_of(settings),
            catalog=default_catalog(),
            changes=self._history,
            metrics=self._metrics,
            logs=logs,
            knowledge=self._knowledge,
            llm=self._llm_diagnoser(model_client, logs) if model_client is not None else None,
        )
        self.consumers = build_consumers(settings, diagnoser, self._history)

    def _llm_diagnoser(self, client: ChatCompletionClient, logs: FileLogSource) -> LlmDiagnoser:
        settings = self._settings

        def tools(
            request: DiagnosisRequested, situation: Situation, nonce: str, past: Sequence[KnowledgeHit]
        ) -> DiagnosisTools:
            return DiagnosisTools(
                request, situation, metrics=self._metrics, changes=self._history,
                change_lookback_s=settings.change_lookback_s, logs=logs, knowledge=self._knowledge,
                knowledge_k=settings.knowledge_k, knowledge_timeout_s=settings.knowledge_timeout_s,
                past_incidents=past, nonce=nonce, max_calls=settings.llm.max_tool_steps,
            )  # fmt: skip

        cache = AnswerCache(self._redis, "llm-diagnosis", ttl_s=settings.llm.cache_ttl_s, prefix=settings.redis_prefix)
        return LlmDiagnoser(client, settings.llm, catalog=default_catalog(), tools=tools, cache=cache)

    async def wait_ready(self) -> None:
        for consumer in self.consumers:
            await consumer.wait_started()
        await self._knowledge.wait_ready()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._settings
        heartbeats = HeartbeatRegistry(self._redis, settings.redis_prefix, settings.heartbeat_ttl_s)
        identity = AgentIdentity(AGENT, settings.instance_id)
        await self._publisher.start()
        try:
            await run_agent(
                identity,
                self.consumers,
                heartbeats,
                stop,
                beat_every_s=settings.heartbeat_every_s,
                tasks=[self._knowledge.run],
                http=agent_http(settings, readiness=[self._knowledge.readiness]),
            )
        finally:
            await self._publisher.stop()
            if self._metrics is not None:
                await self._metrics.aclose()


async def run_diagnosis(settings: DiagnosisSettings, stop: asyncio.Event, redis: Redis) -> None:
    model_client = build_model_client(settings.llm)
    try:
        await DiagnosisAgent(settings, redis, model_client=model_client).run(stop)
    finally:
        if model_client is not None:
            await model_client.close()
