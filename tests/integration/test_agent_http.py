"""An agent's HTTP side on the real stack: /healthz, /readyz, /metrics, extra routes, and a clean stop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY, Counter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.monitoring.service import run_monitoring
from agents.monitoring.settings import MonitoringSettings
from bus.codec import encode_event
from bus.config import KafkaConfig
from bus.consumer import EventConsumer, RecordContext
from bus.events import AlertReceived, AnyEvent, IncidentUpdated
from bus.producer import EventPublisher
from scheduler.agent_http import AgentHttp
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.heartbeats import HeartbeatRecord, HeartbeatRegistry
from tests.integration.kafka_reading import fresh_topic, produce_raw
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration

_STOP_TIMEOUT_S = 30.0


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        return await client.get(path)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels` (None when there is none)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


async def _beat_of(heartbeats: HeartbeatRegistry, instance_id: str) -> HeartbeatRecord | None:
    return next((r for r in await heartbeats.live() if r.instance_id == instance_id), None)


@pytest.fixture
async def monitoring(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str  # noqa: ANN001
) -> AsyncIterator[tuple[MonitoringSettings, int]]:
    """A monitoring agent in this process, HTTP on a free port; (its settings, the bound port)."""
    run = uuid.uuid4().hex[:8]
    settings = MonitoringSettings(
        kafka=kafka_config, redis_url=SecretStr(services.redis_url), redis_prefix=key_prefix,
        instance_id=f"monitoring-http-{run}", consumer_group=f"monitoring-http-{run}", consumer_start="latest",
        heartbeat_every_s=0.2, http_port=0,
    )  # fmt: skip
    stop = asyncio.Event()
    agent = asyncio.create_task(run_monitoring(settings, stop, redis_client))
    heartbeats = HeartbeatRegistry(redis_client, key_prefix)
    try:
        await eventually(lambda: _has_port(heartbeats, settings.instance_id), 30)
        beat = await _beat_of(heartbeats, settings.instance_id)
        assert beat is not None
        yield settings, int(beat.details["http_port"])
    finally:
        stop.set()
        await asyncio.wait_for(agent, _STOP_TIMEOUT_S)


async def _has_port(heartbeats: HeartbeatRegistry, instance_id: str) -> bool:
    beat = await _beat_of(heartbeats, instance_id)
    return beat is not None and beat.details.get("http_port") is not None


async def test_monitoring_serves_health_readiness_and_metrics(
    monitoring: tuple[MonitoringSettings, int], kafka_config: KafkaConfig, redis_client: Redis
) -> None:
    settings, port = monitoring
    assert port != 0
    health = await _get(port, "/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "alive", "agent": "monitoring", "instance_id": settings.instance_id}

    async def ready() -> bool:
        return (await _get(port, "/readyz")).status_code == 200

    await eventually(ready, 30)
    assert (await _get(port, "/readyz")).json()["status"] == "ready"

    consumer = f"monitoring-{settings.instance_id}"
    own_name = f"opswarm_test_{uuid.uuid4().hex[:8]}"
    own = Counter(own_name, "An agent's own metric.")
    try:
        own.inc(3)
        metrics = await _get(port, "/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert _sample(metrics.text, "opswarm_consumer_events_handled_total", consumer=consumer) == 0
        assert _sample(metrics.text, "opswarm_consumer_lag", agent="monitoring", consumer=consumer) == 0
        assert _sample(metrics.text, "opswarm_consumer_events_dead_lettered_total", consumer=consumer) == 0
        assert _sample(metrics.text, "opswarm_consumer_handler_retries_total", consumer=consumer) == 0
        beat_age = _sample(metrics.text, "opswarm_agent_heartbeat_age_seconds", instance=settings.instance_id)
        assert beat_age is not None and beat_age < 5
        assert _sample(metrics.text, f"{own_name}_total") == 3  # agents' own metrics are served too
    finally:
        REGISTRY.unregister(own)

    alert = AlertReceived(
        produced_by="tests", status="firing", alertname="HighErrorRate", service=f"svc-{uuid.uuid4().hex[:8]}",
        severity="critical", labels={"alertname": "HighErrorRate"},
    )  # fmt: skip
    async with EventPublisher(kafka_config, client_id="tests") as publisher:
        await publisher.publish(alert)

    async def handled() -> bool:
        text = (await _get(port, "/metrics")).text
        return _sample(text, "opswarm_consumer_events_handled_total", consumer=consumer) == 1

    await eventually(handled, 30)


@asynccontextmanager
async def _probe_agent(http: AgentHttp, heartbeats: HeartbeatRegistry) -> AsyncIterator[int]:
    """An agent without consumers serving `http`, once it answers; its port. Stopped on leaving."""
    stop = asyncio.Event()
    identity = AgentIdentity("probe", f"probe-{uuid.uuid4().hex[:8]}")
    agent = asyncio.create_task(run_agent(identity, [], heartbeats, stop, http=http))
    try:
        await eventually(lambda: _answers(http), 10)
        assert http.bound_port is not None
        yield http.bound_port
    finally:
        stop.set()
        await asyncio.wait_for(agent, _STOP_TIMEOUT_S)


async def test_readiness_reports_each_failed_check_and_extra_routes_are_served(
    redis_client: Redis, key_prefix: str
) -> None:
    router = APIRouter()

    @router.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "agent"}

    warmed_up = asyncio.Event()

    async def warm() -> str | None:
        return None if warmed_up.is_set() else "still warming up"

    http = AgentHttp("127.0.0.1", 0, routers=[router], readiness=[warm])
    async with _probe_agent(http, HeartbeatRegistry(redis_client, key_prefix)) as port:
        not_ready = await _get(port, "/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["reasons"] == ["still warming up"]
        assert (await _get(port, "/hello")).json() == {"hello": "agent"}
        warmed_up.set()
        assert (await _get(port, "/readyz")).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the port is closed once the agent stopped
        await _get(port, "/healthz")


async def test_readiness_fails_when_redis_does_not_answer(key_prefix: str) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        async with _probe_agent(AgentHttp("127.0.0.1", 0), HeartbeatRegistry(unreachable, key_prefix)) as port:
            answer = await _get(port, "/readyz")
            assert answer.status_code == 503
            [reason] = answer.json()["reasons"]
            assert reason.startswith("redis: ")
            assert (await _get(port, "/healthz")).status_code == 200  # alive, just not ready
    finally:
        await unreachable.aclose()


async def _answers(http: AgentHttp) -> bool:
    if http.bound_port is None:
        return False
    try:
        return (await _get(http.bound_port, "/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_consumer_lag_counts_what_the_consumer_has_not_taken_yet(kafka_config: KafkaConfig) -> None:
    topic = await fresh_topic(kafka_config, "lag")
    release = asyncio.Event()

    async def hold(event: AnyEvent, ctx: RecordContext) -> None:
        await release.wait()

    consumer = EventConsumer(
        kafka_config, name="lag-probe", group_id=f"lag-{uuid.uuid4().hex[:8]}", topics=[topic], handler=hold,
        max_batch=1, start_at="earliest",
    )  # fmt: skip
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        events = [IncidentUpdated(produced_by="tests", incident_id="inc-lag", reason=str(i)) for i in range(5)]
        await produce_raw(kafka_config, topic, [(b"inc-lag", encode_event(e)) for e in events])

        async def lag_is(expected: int) -> bool:
            return await consumer.lag() == expected

        await eventually(lambda: lag_is(4), 30)  # one taken (its handler holds it), four waiting
        release.set()
        await eventually(lambda: lag_is(0), 30)
        assert consumer.stats.handled == 5
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(running, _STOP_TIMEOUT_S)
