"""The storm's senders and observer on the real Kafka (a namespace of the test session's own) and a real bridge
served in this process: both ways in put exactly the same AlertReceived records on the alerts topic, the bridge
sender retries what is worth retrying and nothing else, the observer accounts AlertsTriaged from the end of the
triage topic, and a whole storm adds up against a stand-in for monitoring."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiokafka import ConsumerRecord

from bus.bridge.alert_events import Receipt, alertmanager_events
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.events import AlertOutcome, AlertReceived, AlertsTriaged
from bus.producer import EventPublisher
from bus.topics import ALERTS
from deploy.storm.accounting import StormAccount
from deploy.storm.alert_mix import AlertBatch, AlertMix, MixConfig
from deploy.storm.observer import KafkaUnreachable, TriageObserver
from deploy.storm.senders import BridgeRefused, BridgeSender, KafkaSender, SendFailed
from deploy.storm.storm_run import StormConfig, StormFailed, StormProgress, run_storm
from tests.integration.kafka_reading import TopicReader
from tests.integration.storm_support import BRIDGE_TOKEN, StandInTriage, serving_bridge
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration
LINE = re.compile(r"^storm: sent=(\d+) accounted=(\d+) lost=(\d+) alerts_per_s=(\d+) p50_ms=(\d+) p99_ms=(\d+) "
                  r"incidents=(\d+)$")  # fmt: skip
# What an event says about its alert (not when or in which trace the bridge or the storm built it).
ALERT_FIELDS = ("event_id", "correlation_id", "status", "alertname", "service", "severity", "labels", "annotations",
                "starts_at", "ends_at", "source", "source_fingerprint", "generator_url")  # fmt: skip


def storm_batches(count: int, size: int) -> list[AlertBatch]:
    mix = AlertMix(MixConfig(services=12, groups=3, run_id=uuid.uuid4().hex[:6]), started_at_us=time.time_ns() // 1000)
    return [mix.next_batch(size) for _ in range(count)]


def alert_fields(event: AlertReceived) -> dict:
    return event.model_dump(include=set(ALERT_FIELDS))


async def test_both_senders_put_the_same_alert_records_on_the_alerts_topic(kafka_config: KafkaConfig) -> None:
    batches = storm_batches(6, 25)
    namespaces = {batch.group for batch in batches}
    expected = [alertmanager_events(orjson.loads(batch.body), Receipt.now()) for batch in batches]
    async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader, serving_bridge(kafka_config) as url:
        bridge, kafka = BridgeSender(url, BRIDGE_TOKEN, concurrency=4), KafkaSender(kafka_config)
        await bridge.start()
        await kafka.start()
        try:
            via_bridge = [await bridge.send(batch) for batch in batches]
            via_kafka = [await kafka.send(batch) for batch in batches]
        finally:
            await bridge.stop()
            await kafka.stop()

        def ours(record: ConsumerRecord) -> AlertReceived | None:
            event = decode_event(record.value)
            mine = isinstance(event, AlertReceived) and event.labels.get("namespace") in namespaces
            return event if mine else None  # type: ignore[return-value]

        await reader.until(lambda records: sum(1 for r in records if ours(r)) >= 2 * 150, timeout_s=30)
        records = [record for record in await reader.drain(quiet_s=0.5) if ours(record)]
    events = [event for event in map(ours, records) if event is not None]
    assert len(events) == 2 * 150, "exactly one record per alert per way in"
    for batch, bridged, direct, built in zip(batches, via_bridge, via_kafka, expected, strict=True):
        assert bridged.event_ids == direct.event_ids == [event.event_id for event in built], batch.group
        assert bridged.sent_at <= bridged.accepted_at and direct.sent_at <= direct.accepted_at
    sent_ids = Counter(i for a in via_bridge + via_kafka for i in a.event_ids)
    assert Counter(event.event_id for event in events) == sent_ids
    by_id: dict[str, list[dict]] = {}
    for event in events:
        by_id.setdefault(event.event_id, []).append(alert_fields(event))
    built_by_id = {event.event_id: alert_fields(event) for batch in expected for event in batch}
    for event_id, versions in by_id.items():
        assert all(version == built_by_id[event_id] for version in versions), "both ways publish the same alert"
    assert [record.key for record in records] == [event.service.encode() for event in events]


async def test_the_bridge_sender_refuses_a_wrong_token_without_retrying(kafka_config: KafkaConfig) -> None:
    async with serving_bridge(kafka_config) as url:
        sender = BridgeSender(url, "not-the-token", concurrency=1)
        await sender.start()
        try:
            with pytest.raises(BridgeRefused) as refused:
                await sender.send(storm_batches(1, 5)[0])
        finally:
            await sender.stop()
    assert refused.value.status == 401 and sender.retries == 0


async def test_an_unreachable_bridge_or_kafka_is_said_at_start(kafka_config: KafkaConfig) -> None:
    port = free_tcp_port()
    with pytest.raises(SendFailed, match=f"cannot reach the bridge at http://127.0.0.1:{port}"):
        await BridgeSender(f"http://127.0.0.1:{port}", BRIDGE_TOKEN, concurrency=1).start()
    nowhere = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_tcp_port()}", connect_timeout_s=3, request_timeout_s=3)
    with pytest.raises(SendFailed, match="cannot reach Kafka"):
        await KafkaSender(nowhere).start()
    with pytest.raises(KafkaUnreachable, match="cannot reach Kafka"):
        await TriageObserver(nowhere, StormAccount("alerts", origin=0.0)).start()


@asynccontextmanager
async def scripted_bridge(answers: list[tuple[int, dict[str, str], bytes]]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP server answering POST /alertmanager with `answers` in turn (then 200 with the event ids)."""
    bodies: list[bytes] = []

    async def alertmanager(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        if len(bodies) <= len(answers):
            status, headers, body = answers[len(bodies) - 1]
            return web.Response(status=status, headers=headers, body=body)
        events = alertmanager_events(orjson.loads(bodies[-1]), Receipt.now())
        return web.json_response({"accepted": len(events), "event_ids": [e.event_id for e in events]})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.add_routes([web.post("/alertmanager", alertmanager), web.get("/readyz", readyz)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", [503, 502, 429, 408])
async def test_the_bridge_sender_retries_a_temporary_refusal_with_the_same_body(status: int) -> None:
    batch = storm_batches(1, 10)[0]
    answers = [(status, {"Retry-After": "0"}, b'{"error":"overloaded"}')] * 2
    async with scripted_bridge(answers) as (url, bodies):
        sender = BridgeSender(url, BRIDGE_TOKEN, concurrency=2)
        await sender.start()
        try:
            accepted = await sender.send(batch)
        finally:
            await sender.stop()
    assert bodies == [batch.body] * 3 and accepted.attempts == 3 and sender.retries == 2
    assert accepted.event_ids == [e.event_id for e in alertmanager_events(orjson.loads(batch.body), Receipt.now())]


@pytest.mark.parametrize("status", [400, 413, 422, 500])
async def test_the_bridge_sender_does_not_retry_what_will_not_get_better(status: int) -> None:
    async with scripted_bridge([(status, {}, b'{"error":"invalid"}')]) as (url, bodies):
        sender = BridgeSender(url, BRIDGE_TOKEN, concurrency=1)
        await sender.start()
        try:
            with pytest.raises(SendFailed, match=f"HTTP {status}"):
                await sender.send(storm_batches(1, 3)[0])
        finally:
            await sender.stop()
    assert len(bodies) == 1


async def test_the_bridge_sender_gives_up_at_its_retry_deadline() -> None:
    async with scripted_bridge([(503, {"Retry-After": "0"}, b"{}")] * 100) as (url, bodies):
        sender = BridgeSender(url, BRIDGE_TOKEN, concurrency=1, retry_deadline_s=0.5)
        await sender.start()
        try:
            with pytest.raises(SendFailed, match="did not take the alerts within 0.5 s"):
                await sender.send(storm_batches(1, 3)[0])
        finally:
            await sender.stop()
    assert 2 <= len(bodies) < 10


async def test_the_observer_accounts_triage_records_from_the_end_of_the_topic(kafka_config: KafkaConfig) -> None:
    alerts_topic = kafka_config.topic(ALERTS)

    def triaged(
        partition: int, *outcomes: tuple[str, int, str, str | None], topic: str = alerts_topic
    ) -> AlertsTriaged:
        listed = [AlertOutcome(event_id=i, offset=o, kind=k, incident_id=n) for i, o, k, n in outcomes]  # type: ignore[arg-type]
        return AlertsTriaged(produced_by="tests", source_topic=topic, source_partition=partition, outcomes=listed)

    run = uuid.uuid4().hex[:8]
    a, b, c = f"{run}-a", f"{run}-b", f"{run}-c"
    account = StormAccount(alerts_topic, origin=time.monotonic())
    async with EventPublisher(kafka_config, client_id="storm-test") as publisher:
        await publisher.publish(triaged(0, (a, 900, "opened", "inc-old")))  # before the observer: not its business
        async with TriageObserver(kafka_config, account) as observer:
            stop = asyncio.Event()
            reading = asyncio.create_task(observer.run(stop))
            account.record_sent([a, b, c, a], time.monotonic())
            await publisher.publish_many([
                triaged(0, (a, 1000, "opened", "inc-1"), (b, 1001, "merged", "inc-1")),
                triaged(1, (a, 2000, "duplicate", "inc-1"), (c, 2001, "suppressed", None)),
                triaged(0, (b, 1001, "merged", "inc-1")),  # the same record again: doubled
                triaged(0, (c, 5, "opened", "inc-2"), topic="another.opswarm.alerts.v1"),  # another namespace
            ])  # fmt: skip
            try:
                async with asyncio.timeout(30):
                    while observer.records < 4:
                        observer.changed.clear()
                        await observer.changed.wait()
            finally:
                stop.set()
                await asyncio.wait_for(reading, 30)
    totals = account.totals()
    assert (totals.sent, totals.accounted, totals.lost, totals.doubled, totals.surplus) == (4, 4, 0, 1, 0)
    assert totals.kinds == {"opened": 1, "merged": 1, "duplicate": 1, "suppressed": 1}
    assert totals.incidents == 1 and account.foreign_records == 1
    assert totals.p99_ms is not None and 0 <= totals.p99_ms < 30_000


@pytest.mark.parametrize("via", ["bridge", "kafka"])
async def test_a_storm_is_accounted_to_the_last_alert(kafka_config: KafkaConfig, via: str, tmp_path: Path) -> None:
    config = StormConfig(rate=0, alerts=3000, services=30, groups=5, via=via, batch=50, concurrency=4, window=1000,
                         drain_timeout_s=20, plot_path=tmp_path / "storm.png")  # fmt: skip
    seen: list[StormProgress] = []
    async with serving_bridge(kafka_config) as url, StandInTriage(kafka_config) as triage:
        stop = asyncio.Event()
        triaging = asyncio.create_task(triage.run(stop))
        try:
            report = await asyncio.wait_for(run_storm(config, kafka_config, url, BRIDGE_TOKEN, seen.append), 120)
        finally:
            stop.set()
            await asyncio.wait_for(triaging, 30)
    totals = report.totals
    assert (totals.sent, totals.accounted, totals.lost, totals.doubled, totals.surplus) == (3000, 3000, 0, 0, 0)
    assert sum(totals.kinds.values()) == 3000 and all(totals.kinds[k] for k in ("opened", "merged", "duplicate"))
    assert totals.incidents == 5 and report.drained and not report.problems()
    assert sum(report.sent_by_kind.values()) == 3000
    assert report.plot_path == tmp_path / "storm.png" and report.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(s.sent for s in report.series) == 3000 == sum(s.accounted for s in report.series)
    match = LINE.match(report.line())
    assert match and [int(v) for v in match.groups()[:3]] == [3000, 3000, 0]
    assert int(match[4]) > 0 and int(match[6]) >= int(match[5]) and int(match[7]) == 5
    assert seen and seen[-1].phase == "draining" and max(p.in_flight for p in seen) <= 1000


async def test_lost_alerts_and_doubled_records_are_reported(kafka_config: KafkaConfig) -> None:
    config = StormConfig(rate=5000, alerts=1000, services=10, groups=2, via="kafka", batch=50, drain_timeout_s=2)
    async with StandInTriage(kafka_config, drop_every=97, double_first=True) as triage:
        stop = asyncio.Event()
        triaging = asyncio.create_task(triage.run(stop))
        try:
            report = await asyncio.wait_for(run_storm(config, kafka_config, "http://unused", None), 60)
        finally:
            stop.set()
            await asyncio.wait_for(triaging, 30)
    assert report.totals.lost == triage.dropped > 0 and not report.drained
    assert report.totals.doubled == triage.doubled > 0
    assert report.totals.accounted + report.totals.lost == report.totals.sent == 1000
    problems = report.problems()
    assert any("never accounted" in p for p in problems) and any("doubled" in p for p in problems)


async def test_a_storm_without_a_bridge_fails_with_a_clear_reason(kafka_config: KafkaConfig) -> None:
    config = StormConfig(alerts=10, via="bridge")
    with pytest.raises(StormFailed, match="cannot reach the bridge"):
        await run_storm(config, kafka_config, f"http://127.0.0.1:{free_tcp_port()}", BRIDGE_TOKEN)
