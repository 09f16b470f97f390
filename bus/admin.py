"""Creates the registry's topics and keeps existing ones in line with their declarations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from bus.config import KafkaConfig
from bus.topics import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)


@dataclass
class TopicsReport:
    """What `ensure_topics` did."""

    created: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    repartitioned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Declared fewer partitions than the topic has: Kafka cannot shrink a topic, so this is only reported.
    drift: list[str] = field(default_factory=list)


def admin_client(config: KafkaConfig, purpose: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-admin-{purpose}",
        request_timeout_ms=int(config.request_timeout_s * 1000),
    )


async def ensure_topics(config: KafkaConfig, specs: Iterable[TopicSpec] = ALL_TOPICS) -> TopicsReport:
    """Create missing topics; align retention, cleanup policy and (upwards) partition count of existing ones.

    The topics are created in the config's namespace; the report names them as the broker does.
    """
    specs = [replace(s, name=config.topic(s)) for s in specs]
    report = TopicsReport()
    admin = admin_client(config, "topics")
    await asyncio.wait_for(admin.start(), config.connect_timeout_s)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), config.request_timeout_s))
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = [NewTopic(s.name, s.partitions, 1, topic_configs=s.config()) for s in missing]
            try:
                await asyncio.wait_for(admin.create_topics(new), config.request_timeout_s)
            except TopicAlreadyExistsError:
                log.info("topic created concurrently", extra={"topics": [s.name for s in missing]})
            report.created.extend(s.name for s in missing)
            await _wait_for_leaders(admin, config, [s.name for s in missing])
        present = [s for s in specs if s.name in existing]
        if present:
            await _align(admin, config, present, report)
    finally:
        await admin.close()
    log.info(
        "topics ensured",
        extra={"topics_created": report.created, "reconfigured": report.reconfigured, "drift": report.drift},
    )
    return report


async def _wait_for_leaders(admin: AIOKafkaAdminClient, config: KafkaConfig, names: list[str]) -> None:
    """Topic creation returns before every partition has a leader: wait, so callers can use them at once."""
    deadline = asyncio.get_running_loop().time() + config.request_timeout_s
    while True:
        described = await asyncio.wait_for(admin.describe_topics(names), config.request_timeout_s)
        ready = {d["topic"] for d in described if d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])}
        if ready >= set(names):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics without a leader after {config.request_timeout_s}s: {sorted(set(names) - ready)}")
        await asyncio.sleep(0.1)


async def partition_counts(config: KafkaConfig, names: list[str]) -> dict[str, int]:
    """How many partitions each named topic has (0 for a topic that does not exist)."""
    admin = admin_client(config, "describe")
    await asyncio.wait_for(admin.start(), config.connect_timeout_s)
    try:
        described = await asyncio.wait_for(admin.describe_topics(names), config.request_timeout_s)
    finally:
        await admin.close()
    return {d["topic"]: len(d["partitions"]) if d["error_code"] == 0 else 0 for d in described}


async def _align(admin: AIOKafkaAdminClient, config: KafkaConfig, specs: list[TopicSpec], report: TopicsReport) -> None:
    described = await asyncio.wait_for(admin.describe_topics([s.name for s in specs]), config.request_timeout_s)
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    responses = await asyncio.wait_for(admin.describe_configs(resources), config.request_timeout_s)
    current: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _msg, _type, name, entries in response.resources:
            current[name] = {entry[0]: entry[1] for entry in entries}
    grow: dict[str, NewPartitions] = {}
    stale: list[TopicSpec] = []
    for spec in specs:
        changed = False
        have = partitions.get(spec.name, 0)
        if have < spec.partitions:
            grow[spec.name] = NewPartitions(total_count=spec.partitions)
            report.repartitioned.append(spec.name)
            changed = True
        elif have > spec.partitions:
            report.drift.append(f"{spec.name}: has {have} partitions, declares {spec.partitions}")
        declared = spec.config()
        if any(current.get(spec.name, {}).get(k) != v for k, v in declared.items()):
            stale.append(spec)
            report.reconfigured.append(spec.name)
            changed = True
        if not changed:
            report.unchanged.append(spec.name)
    if grow:
        await asyncio.wait_for(admin.create_partitions(grow), config.request_timeout_s)
    if stale:
        # alter_configs replaces a topic's dynamic config as a whole: send the full declared set.
        await asyncio.wait_for(
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, s.name, configs=s.config()) for s in stale]),
            config.request_timeout_s,
        )


async def delete_namespace(config: KafkaConfig) -> list[str]:
    """Delete every topic of the config's namespace (a test run's or an end-to-end swarm's); the names deleted.

    Refuses the empty namespace: the registry's own topics are never deleted this way.
    """
    if not config.topic_namespace:
        raise ValueError("refusing to delete the topics of the empty namespace")
    admin = admin_client(config, "delete")
    await asyncio.wait_for(admin.start(), config.connect_timeout_s)
    try:
        names = sorted(
            name
            for name in await asyncio.wait_for(admin.list_topics(), config.request_timeout_s)
            if name.startswith(f"{config.topic_namespace}.")
        )
        if names:
            await asyncio.wait_for(admin.delete_topics(names), config.request_timeout_s)
    finally:
        await admin.close()
    log.info("namespace deleted", extra={"namespace": config.topic_namespace, "topics": len(names)})
    return names
