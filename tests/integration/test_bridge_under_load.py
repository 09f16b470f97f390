"""The bridge under more load than it takes at once, on real Kafka: every request is answered 2xx or 503 (never a
hang, another status or a reset connection) within a bounded time, and every alert answered 2xx is on the alerts
topic, once. The in-flight bound is lowered so that concurrent senders on loopback go well beyond it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.topics import ALERTS
from tests.integration.kafka_reading import TopicReader
from tests.integration.test_bridge import AUTH, bridge_settings, serving

pytestmark = pytest.mark.integration

SENDERS = 32
REQUESTS_PER_SENDER = 6
ALERTS_PER_REQUEST = 100
# Two requests' alerts at once, while 32 senders each have one request out: most requests find it full.
MAX_INFLIGHT_ALERTS = 250
PUBLISH_TIMEOUT_S = 5.0
# An answer later than this is a hang: the publish budget, and a margin for a loaded test machine.
ANSWER_BOUND_S = PUBLISH_TIMEOUT_S + 10.0


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no HTTP answer at all (timeout, reset, refused)
    seconds: float
    error: str = ""  # the Problem's `error` of a 4xx/5xx, or the transport failure
    retry_after: str | None = None
    event_ids: tuple[str, ...] = ()


def batch(run: str, sender: int, request: int, alerts: int = ALERTS_PER_REQUEST) -> dict:
    """An Alertmanager notification of `alerts` firing alerts, each with a fingerprint of its own; the services
    (Kafka keys) all start with the run's name."""
    items = []
    for index in range(alerts):
        service = f"{run}-svc-{index % 12}"
        labels = {"alertname": f"Load{index % 5}", "service": service, "severity": "critical", "pod": f"p-{index}"}
        items.append({
            "status": "firing", "labels": labels, "annotations": {"summary": f"load on {service}"},
            "startsAt": "2026-11-21T04:17:08.638817295Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/g", "fingerprint": f"{run}{sender:02d}{request:02d}{index:04d}",
        })  # fmt: skip
    return {
        "receiver": "incident-webhook", "status": "firing", "alerts": items, "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://vm:19093", "version": "4", "groupKey": f"{{}}:{run}",
        "truncatedAlerts": 0,
    }  # fmt: skip


async def post(client: httpx.AsyncClient, body: dict) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post("/alertmanager", json=body, headers=AUTH, timeout=ANSWER_BOUND_S)
    except httpx.HTTPError as exc:
        return Outcome(None, time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
    seconds = time.monotonic() - started
    if response.status_code == 200:
        return Outcome(200, seconds, event_ids=tuple(response.json()["event_ids"]))
    return Outcome(
        response.status_code, seconds, error=response.json().get("error", response.text),
        retry_after=response.headers.get("retry-after"),
    )  # fmt: skip


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


def event_ids_of_run(records: list, run: str) -> list[str]:
    prefix = run.encode()
    return [decode_event(r.value).event_id for r in records if r.key is not None and r.key.startswith(prefix)]


async def test_past_the_in_flight_bound_every_request_gets_2xx_or_503_and_nothing_accepted_is_lost(
    kafka_config: KafkaConfig,
) -> None:
    run = f"load-{uuid.uuid4().hex[:8]}"
    settings = bridge_settings(
        kafka_config, max_inflight_alerts=MAX_INFLIGHT_ALERTS, publish_timeout_s=PUBLISH_TIMEOUT_S
    )

    async def sender(client: httpx.AsyncClient, index: int) -> list[Outcome]:
        # One request after the other, as a sender with one connection does; a 503 is not retried here.
        return [await post(client, batch(run, index, request)) for request in range(REQUESTS_PER_SENDER)]

    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
        async with serving(settings) as client:
            per_sender = await asyncio.gather(*(sender(client, index) for index in range(SENDERS)))
            metrics = (await client.get("/metrics")).text
        outcomes = [outcome for outcomes in per_sender for outcome in outcomes]
        accepted = [event_id for outcome in outcomes for event_id in outcome.event_ids]
        await reader.until(lambda records: len(event_ids_of_run(records, run)) >= len(accepted), 60)
        await reader.drain()  # and nothing more comes
    delivered = event_ids_of_run(reader.records, run)

    assert len(outcomes) == SENDERS * REQUESTS_PER_SENDER
    statuses = Counter(outcome.status for outcome in outcomes)
    assert set(statuses) <= {200, 503}, [o for o in outcomes if o.status not in (200, 503)][:3]
    assert max(outcome.seconds for outcome in outcomes) < ANSWER_BOUND_S
    refused = [outcome for outcome in outcomes if outcome.status == 503]
    assert all(outcome.retry_after == "1" for outcome in refused)
    reasons = Counter(outcome.error for outcome in refused)
    assert set(reasons) <= {"overloaded", "publish_timeout"}, reasons
    assert statuses[200] > 0 and reasons["overloaded"] > 0, statuses  # the bound was reached, and work went on

    assert len(accepted) == statuses[200] * ALERTS_PER_REQUEST
    assert len(set(accepted)) == len(accepted)
    assert not set(accepted) - set(delivered), "alerts answered 200 that are not on Kafka"
    if not reasons["publish_timeout"]:  # a refused request never reached the producer: nothing else landed
        assert sorted(delivered) == sorted(accepted)

    assert metric(metrics, "opswarm_bridge_requests_rejected_total", reason="overloaded") == reasons["overloaded"]
    assert metric(metrics, "opswarm_bridge_alerts_published_total", endpoint="alertmanager") == len(accepted)
    assert metric(metrics, "opswarm_bridge_alerts_in_flight") == 0
    assert metric(metrics, "opswarm_bridge_alerts_in_flight_limit") == MAX_INFLIGHT_ALERTS


async def test_a_request_larger_than_the_bound_goes_through_alone(kafka_config: KafkaConfig) -> None:
    run = f"big-{uuid.uuid4().hex[:8]}"
    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
        async with serving(bridge_settings(kafka_config, max_inflight_alerts=50)) as client:
            outcome = await post(client, batch(run, 0, 0, alerts=120))
        assert outcome.status == 200, outcome
        await reader.until(lambda records: len(event_ids_of_run(records, run)) >= 120, 30)
    assert sorted(event_ids_of_run(reader.records, run)) == sorted(outcome.event_ids)


async def test_a_stalled_body_is_answered_408_in_time(kafka_config: KafkaConfig) -> None:
    """A sender that stops in the middle of its body holds its connection for body_timeout_s, not for ever."""
    body_timeout_s = 0.5
    async with serving(bridge_settings(kafka_config, body_timeout_s=body_timeout_s)) as client:
        port = client.base_url.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = (
                f"POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {AUTH['authorization']}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            )
            writer.write(head.encode() + b'{"version": "4", ')
            await writer.drain()
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), body_timeout_s + 10)  # until the bridge closes
            elapsed_s = time.monotonic() - started
        finally:
            writer.close()
        metrics = (await client.get("/metrics")).text
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"error":"body_timeout"' in answer
    assert body_timeout_s - 0.1 < elapsed_s < body_timeout_s + 5
    assert metric(metrics, "opswarm_bridge_requests_rejected_total", reason="body_timeout") == 1
