"""The knowledge agent on the real stack: closed incidents stored (and their postmortems drafted), queries answered
with hits and statistics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from qdrant_client import AsyncQdrantClient
from redis.asyncio import Redis

from agents.knowledge.service import KnowledgeStores, answer, build_consumer, opened_stores, run_knowledge, store_closed
from agents.knowledge.settings import KnowledgeSettings
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.errors import NonRetriableError, RetriableError
from bus.events import ActionStat, AlertRef, IncidentClosed, KnowledgeAnswered, KnowledgeQueried, PlanStep
from bus.producer import EventPublisher
from bus.topics import KNOWLEDGE
from knowledge.dense_embedders import EmbeddingConfig
from knowledge.incident_memory import IncidentMemory
from knowledge.markdown_documents import read_document
from scheduler.heartbeats import HeartbeatRecord, HeartbeatRegistry
from tests.integration.kafka_reading import TopicReader
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _settings(
    services, kafka_config: KafkaConfig, key_prefix: str, tmp_path: Path  # noqa: ANN001 - tests/conftest.py
) -> KnowledgeSettings:
    run = uuid.uuid4().hex[:8]
    return KnowledgeSettings(
        kafka=kafka_config, redis_url=SecretStr(services.redis_url), redis_prefix=key_prefix,
        instance_id=f"knowledge-{run}", consumer_group=f"knowledge-test-{run}", consumer_start="latest",
        qdrant_path=str(tmp_path / "qdrant"), qdrant_url=None, http_port=0, heartbeat_every_s=0.2,
        embedding=EmbeddingConfig(backend="hashing"), mongo_url=None,
    )  # fmt: skip


def _closed(incident_id: str, service: str, kind: str = "ServiceDown") -> IncidentClosed:
    return IncidentClosed(
        produced_by="tests", incident_id=incident_id, outcome="remediated", verified=True, kind=kind,
        title=f"ServiceDown on {service}", service=service, severity="critical",
        hypothesis="the process exited after an OOM kill",
        alerts=[AlertRef(fingerprint="f", alertname="ServiceDown", status="firing", labels={"service": service})],
        actions=[PlanStep(action="restart_service", target=service)], durations_s={"remediate": 12.5},
    )  # fmt: skip


async def test_the_agent_stores_closed_incidents_and_answers_queries(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path  # noqa: ANN001
) -> None:
    settings = _settings(services, kafka_config, key_prefix, tmp_path)
    run = uuid.uuid4().hex[:8]
    # A kind of our own: incidents other suites close meanwhile on the shared topics change neither hits nor counts.
    service, kind = f"checkout-{run}", f"ServiceDown{run}"
    closed = _closed(f"inc-{run}", service, kind)
    query = KnowledgeQueried(
        produced_by="tests", incident_id=f"inc-{run}-next", query=f"ServiceDown {service} process exited",
        k=3, filters={"kind": kind}, kind=kind, actions=["restart_service", "rollback_deployment"],
    )  # fmt: skip
    heartbeats = HeartbeatRegistry(redis_client, key_prefix)
    stop = asyncio.Event()
    async with opened_stores(settings) as stores:
        memory = stores.memory
        await stores.kb.ingest([read_document(REPO / "deploy" / "demo" / "runbooks" / "service-down.md")])
        consumer = build_consumer(settings, stores)
        agent = asyncio.create_task(run_knowledge(settings, stop, redis_client, stores, consumer))
        try:
            await asyncio.wait_for(consumer.wait_started(), 60)
            beat = await _beat_of(heartbeats, settings.instance_id)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{beat.details['http_port']}") as http:
                # Ready once both consumers run (the postmortem drafts' too): only then is the close below seen.
                await eventually(lambda: _ready(http), 30)
                found = await http.get("/kb/search", params={"q": "ServiceDown", "type": "runbook"}, timeout=5)
                page = await http.get("/ui", params={"q": "ServiceDown"}, timeout=5)
            assert found.status_code == 200 and found.json()["results"][0]["source"].endswith("service-down.md")
            assert page.status_code == 200 and "service-down.md" in page.text
            async with EventPublisher(kafka_config, client_id="tests") as publisher:
                await publisher.publish(closed)
                await eventually(lambda: _stored(memory, closed.incident_id), 30)
                await eventually(lambda: _documented(stores, closed.incident_id), 30)
                # No model configured: the template's draft, stored by the drafts' consumer.
                await eventually(lambda: _drafted(stores, closed.incident_id), 30)
                async with TopicReader(kafka_config, [kafka_config.topic(KNOWLEDGE)]) as reader:
                    await publisher.publish(query)
                    await reader.until(lambda rs: _answers(rs, query.event_id), 30)
        finally:
            stop.set()
            await asyncio.wait_for(agent, 30)
        stored = await memory.get(closed.incident_id)

    [answered] = _answers(reader.records, query.event_id)
    assert (answered.incident_id, answered.causation_id) == (query.incident_id, query.event_id)
    assert answered.produced_by == "knowledge"
    # The runbook's sections first (the only document here), then the similar incident with its facts.
    sections = [h for h in answered.hits if h.type == "runbook"]
    assert sections and all(h.source and h.source.endswith("service-down.md") for h in sections)
    # The incident's postmortem draft is stored, but only retells it: it takes no runbook's place in the answer.
    assert not [h for h in answered.hits if h.type == "postmortem"]
    assert [h.doc_id for h in answered.hits if h.type == "incident"] == [closed.incident_id]
    incident = answered.hits[-1]
    assert incident.score > 0.5 and incident.payload["durations_s"] == {"remediate": 12.5}
    assert answered.action_stats == [
        ActionStat(kind=kind, action="restart_service", attempts=1, successes=1),
        ActionStat(kind=kind, action="rollback_deployment", attempts=0, successes=0),
    ]
    assert stored is not None and stored["closed_event_id"] == closed.event_id
    assert consumer.stats.handled >= 2
    assert all(r.instance_id != settings.instance_id for r in await heartbeats.live())  # forgotten on stop


@pytest.fixture
async def broken_stores(tmp_path: Path) -> AsyncIterator[KnowledgeStores]:
    """Stores whose Qdrant client is gone: every call to them fails."""
    settings = KnowledgeSettings(
        qdrant_path=str(tmp_path / "qdrant"), qdrant_url=None, embedding=EmbeddingConfig(backend="hashing")
    )
    async with opened_stores(settings) as stores:
        pass
    yield stores


async def test_a_failing_qdrant_still_gets_an_answer(broken_stores: KnowledgeStores) -> None:
    query = KnowledgeQueried(
        produced_by="tests", query="ServiceDown checkout", kind="ServiceDown", actions=["restart_service"]
    )
    answered = await answer(broken_stores, query)
    assert (answered.query_event_id, answered.hits, answered.action_stats) == (query.event_id, [], [])


async def test_a_failing_store_is_retried_and_an_incident_without_id_is_rejected(
    broken_stores: KnowledgeStores,
) -> None:
    with pytest.raises(RetriableError, match="storing incident inc-1 failed"):
        await store_closed(broken_stores, _closed("inc-1", "checkout"))
    with pytest.raises(NonRetriableError, match="without incident_id"):
        await store_closed(broken_stores, _closed("inc-1", "checkout").model_copy(update={"incident_id": None}))


async def test_the_process_starts_and_stops_cleanly(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path  # noqa: ANN001
) -> None:
    settings = _settings(services, kafka_config, key_prefix, tmp_path)
    env = {
        **os.environ,
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka_config.topic_namespace,
        "OPSWARM_REDIS_URL": services.redis_url,
        "OPSWARM_REDIS_PREFIX": key_prefix,
        "OPSWARM_INSTANCE_ID": settings.instance_id,
        "OPSWARM_CONSUMER_GROUP": settings.consumer_group,
        "OPSWARM_CONSUMER_START": "latest",
        "OPSWARM_QDRANT_PATH": str(tmp_path / "qdrant"),
        "OPSWARM_HTTP_PORT": "0",
        "OPSWARM_HEARTBEAT_EVERY_S": "0.2",
    }
    env.pop("OPSWARM_QDRANT_URL", None)
    heartbeats = HeartbeatRegistry(redis_client, key_prefix)
    with (tmp_path / "knowledge.log").open("wb") as log:
        command = [sys.executable, "-m", "agents.knowledge"]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            await _beat_of(heartbeats, settings.instance_id)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert all(r.instance_id != settings.instance_id for r in await heartbeats.live())
    # The process made the collection at the configured path, and let go of the directory's lock.
    client = AsyncQdrantClient(path=settings.qdrant_path)
    try:
        assert await client.collection_exists("incidents") and await client.collection_exists("documents")
        # The knowledge base was made with the default embedder: the real all-MiniLM-L6-v2 model.
        info = await client.get_collection("documents")
        assert (info.config.metadata or {})["embedder_model_id"].startswith("sentence-transformers/all-MiniLM-L6-v2@")
    finally:
        await client.close()


async def _beat_of(heartbeats: HeartbeatRegistry, instance_id: str) -> HeartbeatRecord:
    found: list[HeartbeatRecord] = []

    async def beating() -> bool:
        found[:] = [r for r in await heartbeats.live() if r.instance_id == instance_id]
        return bool(found)

    await eventually(beating, 30)
    return found[0]


async def _documented(stores: KnowledgeStores, incident_id: str | None) -> bool:
    return f"incident:{incident_id}" in await stores.kb.store.documents()


async def _drafted(stores: KnowledgeStores, incident_id: str | None) -> bool:
    return f"postmortem-drafts/{incident_id}.md" in await stores.kb.store.documents()


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz", timeout=5)).status_code == 200


async def _stored(memory: IncidentMemory, incident_id: str | None) -> bool:
    assert incident_id is not None
    return await memory.get(incident_id) is not None


def _answers(records, query_event_id: str) -> list[KnowledgeAnswered]:  # noqa: ANN001
    events = [decode_event(record.value) for record in records]
    return [e for e in events if isinstance(e, KnowledgeAnswered) and e.query_event_id == query_event_id]
