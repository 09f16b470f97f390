"""Test helpers that read Kafka directly: collect records until a condition holds, or time out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from bus.admin import ensure_topics, partition_counts
from bus.config import KafkaConfig
from bus.topics import TopicSpec


class TopicReader:
    """Reads whole topics from the offsets they had when it started (no consumer group)."""

    def __init__(self, config: KafkaConfig, topics: list[str], *, isolation: str = "read_committed") -> None:
        self._config = config
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers, isolation_level=isolation, enable_auto_commit=False
        )
        self.records: list[ConsumerRecord] = []

    async def __aenter__(self) -> TopicReader:
        counts = await partition_counts(self._config, self._topics)
        missing = [t for t, n in counts.items() if n == 0]
        assert not missing, f"topics {missing} do not exist: were the topics created?"
        partitions = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n)]
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the positions now, before the test produces anything
            await self._consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(
        self, condition: Callable[[list[ConsumerRecord]], bool], timeout_s: float = 30.0
    ) -> list[ConsumerRecord]:
        """Read until `condition(all records read so far)` holds; fail the test after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not condition(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s}s; read {len(self.records)} records")
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(records)
        return self.records

    async def drain(self, quiet_s: float = 1.0) -> list[ConsumerRecord]:
        """Read until nothing new arrives for `quiet_s` (to show that nothing more comes)."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=int(quiet_s * 1000))
            if not batch:
                return self.records
            for records in batch.values():
                self.records.extend(records)


async def fresh_topic(config: KafkaConfig, label: str, partitions: int = 1) -> str:
    """A new uniquely named topic (its broker name), created through the same admin path as the registry's."""
    spec = TopicSpec(f"opswarm.test.{label}.{uuid.uuid4().hex[:10]}.v1", partitions, 3600 * 1000)
    await ensure_topics(config, [spec])
    return config.topic(spec)


async def produce_raw(config: KafkaConfig, topic: str, values: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_for_path(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s}s")
        await asyncio.sleep(0.05)
