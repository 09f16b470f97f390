"""The diagnosis agent on the real stack: changes remembered, requests diagnosed with evidence, knowledge asked.

The agent runs in-process (consumer groups of its own starting at "latest", its own Redis prefix and instance
id). Knowledge is a real consumer of the test's that answers the agent's queries; Prometheus is a real server
scraping a real target; the logs are real files.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import ChatCompletionClient
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.diagnosis.service import DiagnosisAgent
from agents.diagnosis.settings import DiagnosisSettings
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.consumer import EventConsumer, RecordContext
from bus.events import (
    ActionStat,
    AlertRef,
    AnyEvent,
    ChangeRecorded,
    DiagnosisCompleted,
    DiagnosisRequested,
    Event,
    KnowledgeAnswered,
    KnowledgeHit,
    KnowledgeQueried,
)
from bus.producer import EventPublisher
from bus.topics import DIAGNOSIS, KNOWLEDGE
from knowledge.llm_client import LlmConfig, build_model_client
from scheduler.change_history import ChangeHistory
from tests.integration.kafka_reading import TopicReader
from tests.integration.prometheus_process import prometheus_scraping
from tests.integration.redis_keys import eventually
from tests.llm_stub import llm_stub
from tests.llm_stub_models import playbook_model

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60.0


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


def settings_for(
    services, kafka_config: KafkaConfig, key_prefix: str, run_id: str, **fields: Any  # noqa: ANN001
) -> DiagnosisSettings:
    return DiagnosisSettings(
        kafka=kafka_config, redis_url=SecretStr(services.redis_url), redis_prefix=key_prefix,
        instance_id=f"diagnosis-{run_id}", consumer_group=f"diagnosis-test-{run_id}", consumer_start="latest",
        http_port=None, heartbeat_every_s=0.5, **fields,
    )  # fmt: skip


@asynccontextmanager
async def running(
    settings: DiagnosisSettings, redis: Redis, model_client: ChatCompletionClient | None = None
) -> AsyncIterator[DiagnosisAgent]:
    """The agent, running and listening; stopped cleanly afterwards (a failure to stop fails the test)."""
    agent = DiagnosisAgent(settings, redis, model_client=model_client)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    ready = asyncio.create_task(agent.wait_ready())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        assert ready in done, f"the agent did not get ready: {task.exception() if task.done() else 'timed out'}"
        yield agent
    finally:
        ready.cancel()
        stop.set()
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def knowledge_responder(
    kafka_config: KafkaConfig, run_id: str, incident_id: str, answer: Callable[[KnowledgeQueried], KnowledgeAnswered]
) -> AsyncIterator[list[KnowledgeQueried]]:
    """A real consumer standing in for the knowledge agent: answers the queries of one incident, lists them."""
    asked: list[KnowledgeQueried] = []

    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event]:
        assert isinstance(event, KnowledgeQueried)
        if event.incident_id != incident_id:
            return []
        asked.append(event)
        return [answer(event)]

    consumer = EventConsumer(
        kafka_config, name=f"knowledge-stand-in-{run_id}", group_id=f"knowledge-test-{run_id}",
        topics=[kafka_config.topic(KNOWLEDGE)], handler=handle, event_types=frozenset({"knowledge.queried"}),
        start_at="latest",
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(consumer.wait_started(), START_TIMEOUT_S)
        yield asked
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def diagnosis_request(service: str, kind: str, labels: dict[str, str] | None = None) -> DiagnosisRequested:
    alert = AlertRef(fingerprint=f"fp-{uuid.uuid4().hex[:8]}", alertname=kind, status="firing",
                     labels={"alertname": kind, "service": service, **(labels or {})})  # fmt: skip
    return DiagnosisRequested(
        produced_by="tests", incident_id=f"inc-{uuid.uuid4().hex[:10]}", service=service, kind=kind,
        severity="critical", alerts=[alert],
    )  # fmt: skip


async def diagnosed(
    kafka_config: KafkaConfig, request: DiagnosisRequested, timeout_s: float = 60.0
) -> DiagnosisCompleted:
    """Publish `request` and return the DiagnosisCompleted it caused."""
    async with TopicReader(kafka_config, [kafka_config.topic(DIAGNOSIS)]) as reader:
        async with EventPublisher(kafka_config, client_id="tests") as publisher:
            await publisher.publish(request)
        records = await reader.until(lambda rs: _result_of(rs, request) is not None, timeout_s)
    result = _result_of(records, request)
    assert result is not None
    return result


def _result_of(records, request: DiagnosisRequested) -> DiagnosisCompleted | None:  # noqa: ANN001
    for record in records:
        event = decode_event(record.value)
        if isinstance(event, DiagnosisCompleted) and event.causation_id == request.event_id:
            return event
    return None


def notes(result: DiagnosisCompleted) -> list[str]:
    return [e.summary for e in result.evidence if e.kind == "note"]


async def test_a_recent_deploy_makes_an_error_rate_a_rollback_with_knowledge_history(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, run_id: str  # noqa: ANN001
) -> None:
    service = f"checkout-{run_id}"
    settings = settings_for(services, kafka_config, key_prefix, run_id)
    request = diagnosis_request(service, "HighErrorRate")
    stats = [ActionStat(kind="HighErrorRate", action="rollback_deploy", attempts=4, successes=4),
             ActionStat(kind="HighErrorRate", action="restart_process", attempts=3, successes=1)]  # fmt: skip
    past = KnowledgeHit(doc_id="inc-old", score=0.87, title=f"errors on {service} after a deploy", type="incident",
                        payload={"outcome": "remediated", "actions": [{"action": "rollback_deploy"}]})  # fmt: skip

    def answer(query: KnowledgeQueried) -> KnowledgeAnswered:
        return query.follow(KnowledgeAnswered, produced_by="tests", query_event_id=query.event_id, hits=[past],
                            action_stats=stats)  # fmt: skip

    deploy = ChangeRecorded(produced_by="tests", service=service, kind="deploy", version="2.0.0",
                            previous_version="1.9.3", description="new checkout flow")  # fmt: skip
    responder = knowledge_responder(kafka_config, run_id, request.incident_id, answer)
    async with running(settings, redis_client), responder as asked:
        async with EventPublisher(kafka_config, client_id="tests") as publisher:
            await publisher.publish(deploy)
        history = ChangeHistory(redis_client, key_prefix)
        await eventually(lambda: _has_changes(history, service), 30)

        result = await diagnosed(kafka_config, request)

    assert (result.incident_id, result.correlation_id) == (request.incident_id, request.correlation_id)
    assert result.kind == "HighErrorRate"
    assert result.hypothesis == f"deploy 1.9.3→2.0.0 of {service} raised the error rate"
    assert result.plan is not None
    steps = [(s.action, s.target, s.params) for s in result.plan.steps]
    assert steps == [("rollback_deploy", service, {"to_version": "1.9.3"})]
    assert result.plan.verify is not None and result.plan.verify.comparator == "<"
    changes = [e for e in result.evidence if e.kind == "change"]
    found = [(e.source, e.data["version"], e.data["previous_version"]) for e in changes]
    assert found == [(deploy.event_id, "2.0.0", "1.9.3")]
    incidents = [e for e in result.evidence if e.kind == "incident"]
    assert [(e.source, e.score, e.data["outcome"]) for e in incidents] == [("inc-old", 0.87, "remediated")]
    assert result.history == stats
    # base 0.55, +0.2 for the deploy, +0.1 for rollback_deploy's record; Prometheus is not configured here.
    assert result.confidence == 0.85
    assert "prometheus not configured: no metric evidence" in notes(result)
    (query,) = asked
    assert (query.kind, query.actions) == ("HighErrorRate", ["rollback_deploy", "restart_process"])
    assert (query.correlation_id, query.causation_id) == (request.correlation_id, request.event_id)


async def test_with_a_model_configured_the_diagnosis_is_the_models_and_carries_its_transcript(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, run_id: str  # noqa: ANN001
) -> None:
    service = f"checkout-{run_id}"
    request = diagnosis_request(service, "HighErrorRate")

    def answer(query: KnowledgeQueried) -> KnowledgeAnswered:
        return query.follow(KnowledgeAnswered, produced_by="tests", query_event_id=query.event_id)

    deploy = ChangeRecorded(produced_by="tests", service=service, kind="deploy", version="2.0.0",
                            previous_version="1.9.3", description="new checkout flow")  # fmt: skip
    async with llm_stub() as stub:
        stub.responder = playbook_model
        llm = LlmConfig(base_url=stub.base_url, model="stub-playbook", function_calling=True, structured_output=True)
        settings = settings_for(services, kafka_config, key_prefix, run_id, llm=llm)
        client = build_model_client(llm)
        responder = knowledge_responder(kafka_config, run_id, request.incident_id, answer)
        try:
            async with running(settings, redis_client, client), responder:
                async with EventPublisher(kafka_config, client_id="tests") as publisher:
                    await publisher.publish(deploy)
                await eventually(lambda: _has_changes(ChangeHistory(redis_client, key_prefix), service), 30)
                result = await diagnosed(kafka_config, request)
        finally:
            assert client is not None
            await client.close()

    assert result.method == "llm"
    assert result.llm is not None and result.llm.status == "accepted", result.llm
    assert result.hypothesis.endswith("(the model agrees with the playbook)")
    assert result.plan is not None
    assert [(s.action, s.params) for s in result.plan.steps] == [("rollback_deploy", {"to_version": "1.9.3"})]
    assert result.confidence == 0.8 and result.rationale.startswith("The evidence matches")
    calls = [e.data["name"] for e in result.llm.entries if e.kind == "tool_call"]
    assert calls == ["recent_changes", "log_summary"]
    results = {e.data["name"]: e.content for e in result.llm.entries if e.kind == "tool_result"}
    changes = results["recent_changes"]
    assert "1.9.3" in changes and "new checkout flow" in changes
    assert len(stub.requests) == 2


async def _has_changes(history: ChangeHistory, service: str) -> bool:
    return bool(await history.recent(service, 3600))


async def test_without_an_answer_from_knowledge_the_diagnosis_completes_after_the_timeout(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, run_id: str  # noqa: ANN001
) -> None:
    service = f"cart-{run_id}"
    settings = settings_for(services, kafka_config, key_prefix, run_id, knowledge_timeout_s=1.5)
    request = diagnosis_request(service, "HighErrorRate", {"process": f"{service}-web"})

    async with running(settings, redis_client):
        started = time.monotonic()
        result = await diagnosed(kafka_config, request)
        took_s = time.monotonic() - started

    assert took_s >= 1.5
    assert "knowledge did not answer within 1.5s" in notes(result)
    assert result.history == []
    assert result.plan is not None
    assert [(s.action, s.target) for s in result.plan.steps] == [("restart_process", f"{service}-web")]
    assert result.confidence == 0.35
    assert not [e for e in result.evidence if e.kind in ("change", "incident", "runbook")]


@pytest.fixture
def disk_target(run_id: str) -> Iterator[tuple[str, int]]:
    """A real /metrics endpoint of a service whose disk holds 9000 bytes: (service, port)."""
    registry = CollectorRegistry()
    Gauge("demo_disk_used_bytes", "bytes used", registry=registry).set(9000)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"files-{run_id}", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def prometheus(tmp_path: Path, disk_target: tuple[str, int]) -> Iterator[str]:
    """A real Prometheus scraping the disk target every second; its URL, once the target's series is there."""
    service, target_port = disk_target
    series = f'demo_disk_used_bytes{{service="{service}"}}'
    with prometheus_scraping(tmp_path / "prometheus", target_port, series, labels={"service": service}) as url:
        yield url



async def test_a_full_disk_is_diagnosed_from_prometheus_and_the_logs(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, run_id: str,  # noqa: ANN001
    tmp_path: Path, disk_target: tuple[str, int], prometheus: str,
) -> None:  # fmt: skip
    service, _ = disk_target
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / f"{service}.log").write_text("started\nERROR write failed: no space left on device\nretrying\n")
    settings = settings_for(
        services, kafka_config, key_prefix, run_id,
        prometheus_url=prometheus, log_roots=[str(logs)], knowledge_timeout_s=1,
    )  # fmt: skip
    labels = {"path": str(tmp_path / "data"), "threshold_bytes": "5000", "verify_window_s": "5"}

    async with running(settings, redis_client):
        result = await diagnosed(kafka_config, diagnosis_request(service, "DiskFull", labels))

    (metric,) = [e for e in result.evidence if e.kind == "metric"]
    assert (metric.data["value"], metric.data["confirms"]) == (9000.0, True)
    assert metric.source == f'max(demo_disk_used_bytes{{service="{service}"}})'
    (log,) = [e for e in result.evidence if e.kind == "log"]
    assert log.data["lines"] == ["ERROR write failed: no space left on device"]
    assert result.confidence == 0.7  # base 0.6, +0.1 for the metric
    assert result.plan is not None
    assert [(s.action, s.params) for s in result.plan.steps] == [
        ("clear_disk", {"path": str(tmp_path / "data"), "min_age_s": 3600.0})
    ]
    verify = result.plan.verify
    assert verify is not None and (verify.query, verify.comparator, verify.threshold, verify.window_s) == (
        metric.source, "<", 5000.0, 5.0
    )
