"""Three monitoring processes in one consumer group take a storm, and a rebalance in the middle of it (one replica
stops, another joins): every alert record gets exactly one outcome, no incident is opened twice, and the storm's
service groups fold into a handful of incidents."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bus.admin import ensure_topics
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.events import AlertReceived, AlertsTriaged, IncidentOpened
from bus.producer import EventPublisher
from bus.topics import INCIDENTS, TRIAGE
from scheduler.heartbeats import HeartbeatRegistry
from tests.integration.kafka_reading import TopicReader
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GROUPS, SERVICES_PER_GROUP = 4, 15


def _storm(run: str, seed: int = 7) -> list[AlertReceived]:
    """Firing alerts over 60 services in 4 groups, with repeats (the same event again), flaps and resolves."""
    rng = random.Random(seed)
    alerts: list[AlertReceived] = []
    firing: list[AlertReceived] = []
    for n in range(3000):
        group, service = n % GROUPS, f"svc-{run}-{rng.randrange(GROUPS * SERVICES_PER_GROUP)}"
        roll = rng.random()
        if firing and roll < 0.15:
            alerts.append(rng.choice(firing))  # Alertmanager re-sending a notification
        elif firing and roll < 0.25:
            fired = firing.pop(rng.randrange(len(firing)))
            alerts.append(fired.model_copy(update={"status": "resolved", "event_id": str(uuid.uuid4())}))
        else:
            name = f"Alert{rng.randrange(8)}"
            alert = AlertReceived(
                produced_by="tests", status="firing", alertname=name, service=service, severity="warning",
                labels={"alertname": name, "service": service, "namespace": f"ns-{run}-{group}"},
            )  # fmt: skip
            firing.append(alert)
            alerts.append(alert)
    return alerts


def _start(name: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "agents.monitoring"], cwd=REPO, stdout=log, stderr=log,
        env={**env, "OPSWARM_INSTANCE_ID": name},
    )  # fmt: skip


def _outcomes(records) -> list:  # noqa: ANN001
    return [(event.source_partition, o) for r in records if isinstance(event := decode_event(r.value), AlertsTriaged)
            for o in event.outcomes]  # fmt: skip


async def test_three_replicas_and_a_rebalance_lose_and_double_nothing(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path  # noqa: ANN001
) -> None:
    run = uuid.uuid4().hex[:6]
    # A topic namespace of its own: the replicas read the alerts topic from the start, and the account must see
    # this storm's alerts only.
    kafka_config = kafka_config.model_copy(update={"topic_namespace": f"replicas-{run}"})
    await ensure_topics(kafka_config)
    env = {
        **os.environ,
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka_config.topic_namespace,
        "OPSWARM_REDIS_URL": services.redis_url,
        "OPSWARM_REDIS_PREFIX": key_prefix,
        "OPSWARM_CONSUMER_GROUP": f"monitoring-replicas-{run}",
        "OPSWARM_HEARTBEAT_EVERY_S": "0.2",
        "OPSWARM_HTTP_PORT": "0",
        "OPSWARM_MAX_BATCH": "50",  # many small transactions, so the rebalance lands between and inside them
    }
    heartbeats = HeartbeatRegistry(redis_client, key_prefix)
    names = [f"monitoring-{run}-{k}" for k in range(3)]
    processes = {name: _start(name, env, tmp_path) for name in names}
    alerts = _storm(run)
    half = len(alerts) // 2
    try:
        await eventually(lambda: _all_beating(heartbeats, names), 60)
        async with TopicReader(kafka_config, [kafka_config.topic(TRIAGE), kafka_config.topic(INCIDENTS)]) as reader:
            async with EventPublisher(kafka_config, client_id="tests") as publisher:
                await publisher.publish_many(alerts[:half])
                await reader.until(lambda rs: len(_outcomes(rs)) >= half // 3, 60)
                # the rebalance, mid-storm: one replica leaves, another joins
                processes[names[1]].send_signal(signal.SIGTERM)
                joining = f"monitoring-{run}-3"
                processes[joining] = _start(joining, env, tmp_path)
                await publisher.publish_many(alerts[half:])
            await reader.until(lambda rs: len(_outcomes(rs)) >= len(alerts), 120)
            await reader.drain()
        assert await asyncio.to_thread(processes[names[1]].wait, 30) == 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()

    outcomes = _outcomes(reader.records)
    records = Counter((partition, o.offset) for partition, o in outcomes)
    assert [r for r, n in records.items() if n > 1] == []  # no record decided and published twice
    assert len(records) == len(alerts)  # every record of the storm accounted for
    assert Counter(o.event_id for _, o in outcomes) == Counter(a.event_id for a in alerts)
    kinds = Counter(o.kind for _, o in outcomes)
    assert kinds["duplicate"] > 0 and kinds["merged"] > 0 and sum(kinds.values()) == len(alerts)
    opened = [e for r in reader.records if isinstance(e := decode_event(r.value), IncidentOpened)]
    assert sorted(e.incident_id for e in opened) == sorted(o.incident_id for _, o in outcomes if o.kind == "opened")
    assert len({e.incident_id for e in opened}) == len(opened)  # none opened twice
    # without storm mode every service would have an incident of its own (and more after resolves)
    assert len(opened) <= len({a.service for a in alerts}) // 3


async def _all_beating(heartbeats: HeartbeatRegistry, names: list[str]) -> bool:
    live = {r.instance_id for r in await heartbeats.live()}
    return all(name in live for name in names)
