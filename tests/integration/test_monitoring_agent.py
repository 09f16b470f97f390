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


def _alert(service: str, alertname: str, status: str = "firing", namespace: str = "prod") -> AlertReceived:
    return AlertReceived(
        produced_by="tests", status=status, alertname=alertname, service=service, severity="critical",
        labels={"alertname": alertname, "service": service, "namespace": namespace},
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
        # A namespace of the run's own: other tests' alerts in this topic namespace (which a new group reads from
        # the start) could make "prod" storm, and a storm folds new services into its incident.
        prod = f"prod-{run}"
        alerts = [
            _alert(checkout, "HighErrorRate", namespace=prod),
            _alert(checkout, "HighLatency", namespace=prod),
            _alert(checkout, "HighErrorRate", namespace=prod),  # a repeat: says nothing
            _alert(cart, "HighErrorRate", namespace=prod),
            _alert(checkout, "HighErrorRate", "resolved", namespace=prod),
            _alert(checkout, "HighLatency", "resolved", namespace=prod),
        ]
        ids = {a.event_id: i for i, a in enumerate(alerts)}
        async with TopicReader(kafka_config, [kafka_config.topic(INCIDENTS)]) as reader:
            async with EventPublisher(kafka_config, client_id="tests") as publisher:
                for alert in alerts:  # one by one: same-service order is kept by key, cross-service is not needed
                    await publisher.publish(alert)
            # The incident events of alerts 0 (opened), 3 (opened) and 5 (resolved) must come; alerts 1 and 4 each
            # cause an update, unless they fell into one batch with a later change of their incident (monitoring
            # sums up a batch's changes of an incident in one update, caused by the last of them).
            records = await reader.until(lambda rs: {0, 3, 5} <= {i for i, _ in _answers(rs, ids)}, 60)
            await reader.drain()
        answers = _answers(reader.records, ids)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()

    by_alert = dict(answers)
    assert [(i, e.type) for i, e in answers if i in (0, 3, 5)] == [
        (0, "incident.opened"), (3, "incident.opened"), (5, "incident.resolved"),
    ]  # fmt: skip
    updates = [(i, e) for i, e in answers if e.type == "incident.updated"]
    assert updates and {i for i, _ in updates} <= {1, 4}  # the repeat (alert 2) says nothing
    assert all(e.incident_id == by_alert[0].incident_id for _, e in updates)
    assert by_alert[5].incident_id == by_alert[0].incident_id != by_alert[3].incident_id
    assert by_alert[0].title == f"HighErrorRate on {checkout} (prod-{run})"
    assert updates[-1][1].reason in ("alert HighErrorRate resolved", "1 alert(s) joined, 1 alert(s) resolved")
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
