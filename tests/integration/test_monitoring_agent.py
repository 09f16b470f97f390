"""The monitoring process on the real stack: alerts in, incidents out, a heartbeat while it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.events import AlertReceived
from bus.producer import EventPublisher
from bus.topics import INCIDENTS
from scheduler.heartbeats import HeartbeatRegistry
from tests.integration.kafka_reading import TopicReader
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _alert(service: str, alertname: str, status: str = "firing") -> AlertReceived:
    return AlertReceived(
        produced_by="tests", status=status, alertname=alertname, service=service, severity="critical",
        labels={"alertname": alertname, "service": service, "namespace": "prod"},
    )  # fmt: skip


async def test_monitoring_turns_alerts_into_incidents(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path  # noqa: ANN001
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka_config.topic_namespace,
        "OPSWARM_REDIS_URL": services.redis_url,
        "OPSWARM_REDIS_PREFIX": key_prefix,
        "OPSWARM_INSTANCE_ID": f"monitoring-{run}",
        "OPSWARM_CONSUMER_GROUP": f"monitoring-test-{run}",
        "OPSWARM_HEARTBEAT_EVERY_S": "0.2",
        "OPSWARM_HTTP_PORT": "0",
    }
    log = (tmp_path / "monitoring.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "agents.monitoring"], cwd=REPO, env=env, stdout=log, stderr=log)
    heartbeats = HeartbeatRegistry(redis_client, key_prefix)
    try:
        await eventually(lambda: _beating(heartbeats, f"monitoring-{run}"), 30)
        checkout, cart = f"checkout-{run}", f"cart-{run}"
        alerts = [
            _alert(checkout, "HighErrorRate"),
            _alert(checkout, "HighLatency"),
            _alert(checkout, "HighErrorRate"),  # a repeat: says nothing
            _alert(cart, "HighErrorRate"),
            _alert(checkout, "HighErrorRate", "resolved"),
            _alert(checkout, "HighLatency", "resolved"),
        ]
        ids = {a.event_id: i for i, a in enumerate(alerts)}
        async with TopicReader(kafka_config, [kafka_config.topic(INCIDENTS)]) as reader:
            async with EventPublisher(kafka_config, client_id="tests") as publisher:
                for alert in alerts:  # one by one: same-service order is kept by key, cross-service is not needed
                    await publisher.publish(alert)
            records = await reader.until(lambda rs: len(_answers(rs, ids)) >= 5, 60)
            await reader.drain()
        answers = _answers(reader.records, ids)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()

    assert [(i, e.type) for i, e in answers] == [
        (0, "incident.opened"), (1, "incident.updated"), (3, "incident.opened"), (4, "incident.updated"),
        (5, "incident.resolved"),
    ]  # fmt: skip
    by_alert = dict(answers)
    assert by_alert[1].incident_id == by_alert[0].incident_id == by_alert[5].incident_id
    assert by_alert[3].incident_id != by_alert[0].incident_id
    assert by_alert[0].title == f"HighErrorRate on {checkout} (prod)"
    assert by_alert[4].reason == "alert HighErrorRate resolved"
    assert all(r.instance_id != f"monitoring-{run}" for r in await heartbeats.live())  # forgotten on a clean stop
    assert records  # the reader saw the topic


async def _beating(heartbeats: HeartbeatRegistry, instance_id: str) -> bool:
    return any(r.instance_id == instance_id for r in await heartbeats.live())


def _answers(records, ids: dict[str, int]) -> list:  # noqa: ANN001
    """(index of the causing alert, event) for every incident event caused by one of our alerts, in alert order."""
    found = []
    for record in records:
        event = decode_event(record.value)
        if event.causation_id in ids:
            found.append((ids[event.causation_id], event))
    return sorted(found, key=lambda pair: pair[0])
