"""The alert bridge served by uvicorn on the real stack: webhooks in, AlertReceived on Kafka out, 4xx for what
is wrong, 503 while Kafka is away and delivery exactly once when it is back; `python -m bus.bridge` and
`opswarm bridge` as processes."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.coordination.incident_flow import CoordinationPolicy, IncidentFlow
from bus.admin import ensure_topics
from bus.bridge.server import BridgeServer
from bus.bridge.settings import BridgeConfig, BridgeSettings
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.events import AlertReceived, DiagnosisRequested, IncidentOpened
from bus.topics import ALERTS
from execution.catalog import default_catalog
from knowledge.incident_store import IncidentStore
from scheduler.alert_correlation import AlertCorrelator
from scheduler.arbitration import ActionArbiter, ArbitrationPolicy
from scheduler.incident_events import incident_events
from tests.integration.kafka_reading import TopicReader
from tests.integration.opswarm_cli import OPSWARM
from tests.integration.private_kafka import PrivateKafka, all_records
from tests.services import SuiteSettings, free_tcp_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TOKEN = "bridge-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
_STOP_TIMEOUT_S = 30.0


def webhook(service: str, *, status: str = "firing", alertname: str = "HighErrorRate", fingerprint: str = "") -> dict:
    """An Alertmanager 0.25 notification of one alert (resolved: with its end time, as Alertmanager sends it)."""
    labels = {"alertname": alertname, "namespace": "prod", "service": service, "severity": "critical"}
    alert = {
        "status": status, "labels": labels, "annotations": {"summary": f"5xx rate above 5% for {service}"},
        "startsAt": "2026-11-21T04:17:08.638817295Z",
        "endsAt": "2026-11-21T04:27:38.123456789Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=rate",
        "fingerprint": fingerprint or uuid.uuid4().hex[:16],
    }  # fmt: skip
    return {
        "receiver": "incident-webhook", "status": status, "alerts": [alert],
        "groupLabels": {"alertname": alertname, "service": service}, "commonLabels": labels,
        "commonAnnotations": alert["annotations"], "externalURL": "http://vm:19093", "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}", service="{service}"}}', "truncatedAlerts": 0,
    }  # fmt: skip


def bridge_settings(kafka: KafkaConfig, **bridge: object) -> BridgeSettings:
    config = BridgeConfig(host="127.0.0.1", port=0, token=SecretStr(TOKEN), **bridge)  # type: ignore[arg-type]
    return BridgeSettings(kafka=kafka, bridge=config)


@asynccontextmanager
async def serving(settings: BridgeSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The bridge served by uvicorn in this process on a free port, and a client for it; stopped afterwards."""
    server = BridgeServer(settings)
    port = server.bind()
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await _until(lambda: _answers(client, "/healthz", 200), 30, task)
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, _STOP_TIMEOUT_S)


async def _answers(client: httpx.AsyncClient, path: str, status: int) -> bool:
    try:
        return (await client.get(path)).status_code == status
    except httpx.TransportError:
        return False


async def _until(condition, timeout_s: float, task: asyncio.Task | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if task is not None and task.done():
            task.result()
            raise AssertionError("the bridge stopped serving")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


def _events(records: list, service: str) -> list[AlertReceived]:
    events = [decode_event(r.value) for r in records if r.key == service.encode()]
    assert all(isinstance(e, AlertReceived) for e in events)
    return events  # type: ignore[return-value]


def _rejected(metrics: str, reason: str) -> float:
    return _sample(metrics, "opswarm_bridge_requests_rejected_total", endpoint="alertmanager", reason=reason) or 0


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


async def test_a_firing_alert_and_its_resolve_land_as_two_alert_received(kafka_config: KafkaConfig) -> None:
    service = f"checkout-{uuid.uuid4().hex[:8]}"
    firing = webhook(service, fingerprint="32c16fb6eca3387b")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
        async with serving(bridge_settings(kafka_config)) as client:
            first = await client.post("/alertmanager", json=firing, headers={**AUTH, "traceparent": traceparent})
            second = await client.post("/alertmanager", json=webhook(service, status="resolved",
                                                                     fingerprint="32c16fb6eca3387b"), headers=AUTH)
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
        await reader.until(lambda rs: len(_events(rs, service)) >= 2, 30)
        await reader.drain()
    assert (first.status_code, second.status_code, ready.status_code) == (200, 200, 200), (first.text, second.text)
    fired, resolved = _events(reader.records, service)
    assert first.json() == {"accepted": 1, "event_ids": [fired.event_id]}
    assert second.json() == {"accepted": 1, "event_ids": [resolved.event_id]}
    assert (fired.status, resolved.status) == ("firing", "resolved")
    for event in (fired, resolved):
        assert (event.source, event.produced_by, event.alertname, event.service, event.severity) == (
            "alertmanager", "bridge", "HighErrorRate", service, "critical")  # fmt: skip
        assert (event.source_fingerprint, event.labels) == ("32c16fb6eca3387b", firing["alerts"][0]["labels"])
        assert event.starts_at is not None and event.starts_at.isoformat() == "2026-11-21T04:17:08.638817+00:00"
    assert (fired.ends_at, resolved.ends_at.isoformat()) == (None, "2026-11-21T04:27:38.123456+00:00")  # type: ignore
    assert fired.correlation_id == resolved.correlation_id and fired.event_id != resolved.event_id
    assert fired.trace.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # the sender's trace goes on
    records = [r for r in reader.records if r.key == service.encode()]
    assert records[0].partition == records[1].partition  # keyed by service: in order
    assert dict(records[0].headers)["traceparent"] == fired.trace.traceparent.encode()
    assert _sample(metrics, "opswarm_bridge_alerts_received_total", endpoint="alertmanager") == 2
    assert _sample(metrics, "opswarm_bridge_alerts_published_total", endpoint="alertmanager") == 2
    assert _sample(metrics, "opswarm_bridge_publish_seconds_count") == 2


async def test_generic_alerts_are_published_with_their_source(kafka_config: KafkaConfig) -> None:
    service = f"shop-{uuid.uuid4().hex[:8]}"
    body = {"source": "uptime-robot", "alerts": [
        {"alertname": "SiteDown", "service": service, "severity": "page", "starts_at": "2026-11-21T04:17:08Z"},
        {"alertname": "SlowPages", "service": service, "labels": {"severity": "minor"}},
    ]}  # fmt: skip
    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
        async with serving(bridge_settings(kafka_config)) as client:
            response = await client.post("/alerts", json=body, headers=AUTH)
        await reader.until(lambda rs: len(_events(rs, service)) >= 2, 30)
    assert response.status_code == 200, response.text
    events = _events(reader.records, service)
    assert response.json()["event_ids"] == [e.event_id for e in events]
    assert [(e.source, e.alertname, e.severity) for e in events] == [
        ("uptime-robot", "SiteDown", "critical"), ("uptime-robot", "SlowPages", "warning")]  # fmt: skip


async def test_bad_requests_get_their_4xx_and_publish_nothing(kafka_config: KafkaConfig) -> None:
    service = f"bad-{uuid.uuid4().hex[:8]}"
    limit = 64 * 1024
    json_headers = {**AUTH, "content-type": "application/json"}
    no_alertname = webhook(service)
    del no_alertname["alerts"][0]["labels"]["alertname"]
    no_service = webhook(service)
    no_service["alerts"][0]["labels"] = {"alertname": "X", "job": service}

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 16 * 1024

    cases = [  # (name, headers, body, status, reason)
        ("not JSON", json_headers, b'{"version": "4", alerts: []}', 400, "not_json"),
        ("wrong shape", json_headers, b'{"version": "4", "status": "firing", "alerts": {}}', 422, "invalid"),
        ("no alertname", json_headers, json.dumps(no_alertname).encode(), 422, "invalid"),
        ("no service", json_headers, json.dumps(no_service).encode(), 422, "invalid"),
        ("oversize", json_headers, b" " * (limit + 1), 413, "too_large"),
        ("oversize, chunked", json_headers, streamed(), 413, "too_large"),
        ("no token", {"content-type": "application/json"}, webhook(service), 401, "unauthorized"),
        ("wrong token", {"authorization": "Bearer wrong", "content-type": "application/json"}, webhook(service), 401,
         "unauthorized"),
        ("text/plain", {**AUTH, "content-type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
    ]  # fmt: skip
    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
        async with serving(bridge_settings(kafka_config, max_body_bytes=limit)) as client:
            answers = {}
            for name, headers, body, _, _ in cases:
                content = json.dumps(body).encode() if isinstance(body, dict) else body
                answers[name] = await client.post("/alertmanager", headers=headers, content=content)
            # Same service, so same partition: a record of any request above would come before this one.
            sentinel = await client.post("/alertmanager", json=webhook(service, alertname="Sentinel"), headers=AUTH)
            metrics = (await client.get("/metrics")).text
        await reader.until(lambda rs: len(_events(rs, service)) >= 1, 30)
        await reader.drain()
    for name, _, _, status, reason in cases:
        answer = answers[name]
        assert (answer.status_code, answer.json()["error"]) == (status, reason), (name, answer.text)
    assert "alerts[0].labels: label 'alertname' is missing" in answers["no alertname"].json()["detail"]
    assert "alerts[0].labels: label 'service' is missing" in answers["no service"].json()["detail"]
    assert answers["no token"].headers["www-authenticate"] == 'Bearer realm="opswarm-bridge"'
    assert 'error="invalid_token"' in answers["wrong token"].headers["www-authenticate"]
    assert sentinel.status_code == 200
    assert [e.alertname for e in _events(reader.records, service)] == ["Sentinel"]
    for reason, count in {"not_json": 1, "invalid": 3, "too_large": 2, "unauthorized": 2}.items():
        assert _rejected(metrics, reason) == count


async def test_a_resent_webhook_has_the_same_event_ids_and_opens_no_second_incident(
    kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, incident_store: IncidentStore
) -> None:
    """Alertmanager re-sends a notification whose first attempt landed (its answer was lost, say): both records
    carry the same event id, monitoring gives the repeat the decision it remembered for that id (the same
    incident, never a new one) and coordination ignores an IncidentOpened of an incident it already has."""
    service = f"resent-{uuid.uuid4().hex[:8]}"
    body = webhook(service)
    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
        async with serving(bridge_settings(kafka_config)) as client:
            answers = [await client.post("/alertmanager", json=copy.deepcopy(body), headers=AUTH) for _ in range(2)]
        await reader.until(lambda rs: len(_events(rs, service)) >= 2, 30)
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["event_ids"] == answers[1].json()["event_ids"]
    alerts = _events(reader.records, service)
    assert alerts[0].event_id == alerts[1].event_id == answers[0].json()["event_ids"][0]

    correlator = AlertCorrelator(redis_client, prefix=key_prefix)  # what monitoring's handler does per alert
    outcomes = [await correlator.observe(alert) for alert in alerts]
    assert outcomes[0].kind == "opened" and outcomes[1].incident_id == outcomes[0].incident_id
    flow = IncidentFlow(incident_store, ActionArbiter(redis_client, key_prefix, ArbitrationPolicy()), default_catalog(),
                        CoordinationPolicy())  # fmt: skip
    answers_of_coordination = []
    for alert, outcome in zip(alerts, outcomes, strict=True):
        for event in incident_events(alert, outcome):
            assert isinstance(event, IncidentOpened) and event.incident_id == outcomes[0].incident_id
            answers_of_coordination.append(await flow.handle(event))
    opened, reopened = answers_of_coordination
    assert DiagnosisRequested in [type(e) for e in opened] and reopened == []  # diagnosed once, nothing twice
    assert [r.incident_id for r in await incident_store.list()] == [outcomes[0].incident_id]


async def test_503_while_kafka_is_away_then_each_alert_delivered_exactly_once(
    settings: SuiteSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bridge comes up with Kafka down and says 503; works once Kafka is there, without a restart; says 503
    again (within publish_timeout_s) while Kafka is stopped; and after Kafka is back, Alertmanager's retry of the
    same body lands once: the records the failed attempt had handed to the producer were dropped, not delivered."""
    publish_timeout_s = 2.0
    bound_s = publish_timeout_s + 1.5
    first, second = webhook(f"outage-a-{uuid.uuid4().hex[:6]}"), webhook(f"outage-b-{uuid.uuid4().hex[:6]}")
    async with PrivateKafka(settings, tmp_path / "kafka") as kafka:
        async with serving(bridge_settings(kafka.config, publish_timeout_s=publish_timeout_s)) as client:
            assert (await client.get("/readyz")).status_code == 503
            refused, elapsed_s = await _timed_post(client, first)  # nothing listens: refused at once
            assert (refused.status_code, refused.json()["error"]) == (503, "kafka_unavailable"), refused.text
            assert elapsed_s < bound_s and refused.headers["retry-after"] == "1"

            await kafka.start()
            await ensure_topics(kafka.config, [ALERTS])
            taken_first = await _post_until_taken(client, first)
            assert (await client.get("/readyz")).status_code == 200

            await kafka.stop()
            refused, elapsed_s = await _timed_post(client, second)  # handed to the producer, never acknowledged
            assert (refused.status_code, refused.json()["error"]) == (503, "publish_timeout"), refused.text
            assert publish_timeout_s - 0.1 < elapsed_s < bound_s, elapsed_s
            assert (await client.get("/readyz")).status_code == 503

            await kafka.start()
            taken_second = await _post_until_taken(client, second)
            metrics = (await client.get("/metrics")).text
        records = await all_records(kafka.config, ALERTS.name, expected=2)
    expected = taken_first.json()["event_ids"] + taken_second.json()["event_ids"]
    delivered = [decode_event(r.value).event_id for r in records]
    assert sorted(delivered) == sorted(expected), f"delivered {delivered}, expected each of {expected} once"
    assert _sample(metrics, "opswarm_bridge_alerts_published_total", endpoint="alertmanager") == 2
    assert _rejected(metrics, "publish_timeout") >= 1 and _rejected(metrics, "kafka_unavailable") >= 1
    gc.collect()  # a future whose error nobody retrieved is reported when it is collected
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR] == []


async def _timed_post(client: httpx.AsyncClient, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post("/alertmanager", json=body, headers=AUTH)
    return response, time.monotonic() - started


async def _post_until_taken(client: httpx.AsyncClient, body: dict, timeout_s: float = 60.0) -> httpx.Response:
    """Re-send as Alertmanager does after a 503, until the bridge takes it."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.post("/alertmanager", json=body, headers=AUTH)
        if response.status_code == 200:
            return response
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, f"still {response.status_code} after {timeout_s} s: {response.text}"
        await asyncio.sleep(0.2)


def _process_env(kafka_config: KafkaConfig, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka_config.topic_namespace,
        "OPSWARM_BRIDGE__PORT": str(port),
        "OPSWARM_BRIDGE__TOKEN": TOKEN,
        "OPSWARM_LOG_LEVEL": "INFO",
    }


@pytest.mark.parametrize(
    ("argv", "sig"),
    [([sys.executable, "-m", "bus.bridge"], signal.SIGTERM), ([str(OPSWARM), "bridge"], signal.SIGINT)],
    ids=["python -m bus.bridge, SIGTERM", "opswarm bridge, SIGINT"],
)
async def test_the_bridge_process_serves_and_stops_cleanly_on_a_signal(
    kafka_config: KafkaConfig, argv: list[str], sig: signal.Signals
) -> None:
    port = free_tcp_port()
    service = f"proc-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, env=_process_env(kafka_config, port), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await _until(lambda: _answers(client, "/readyz", 200), 60)
                response = await client.post("/alertmanager", json=webhook(service), headers=AUTH)
            assert response.status_code == 200, response.text
            await reader.until(lambda rs: len(_events(rs, service)) >= 1, 30)
        process.send_signal(sig)
        stdout, stderr = await asyncio.wait_for(process.communicate(), _STOP_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert b'"message": "bridge stopped"' in stderr, stderr.decode()
    if argv[-1] == "bridge":
        assert stdout.decode().splitlines() == [f"bridge listening on http://127.0.0.1:{port}", "bridge stopped"]
