"""Watching monitoring's verdicts: AlertsTriaged records from the triage topic, fed into the storm's account.

The observer assigns itself every partition of the triage topic (no consumer group, nothing committed) and
seeks to the end before the storm sends anything, so it sees exactly the verdicts that come after. It reads
`read_committed`: monitoring publishes each AlertsTriaged in the Kafka transaction of the incident events it
accounts for, so an outcome becomes visible at the same instant as its incident event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from bus.admin import partition_counts
from bus.config import KafkaConfig
from bus.events import AlertsTriaged
from bus.topics import TRIAGE
from deploy.storm.accounting import StormAccount

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
MAX_RECORDS_PER_POLL = 2000


class KafkaUnreachable(Exception):
    """Kafka did not answer, or the triage topic does not exist."""


class TriageObserver:
    """`start` (assign and seek to the end), then `run` until `stop` is set; `changed` is set after each poll that
    accounted anything."""

    def __init__(
        self, config: KafkaConfig, account: StormAccount, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._account = account
        self._clock = clock
        self._topic = config.topic(TRIAGE)
        self._consumer: AIOKafkaConsumer | None = None
        self.changed = asyncio.Event()
        self.records = 0
        self.undecodable = 0

    async def start(self) -> None:
        """Connect, assign every partition of the triage topic and resolve its end offsets; KafkaUnreachable."""
        try:
            counts = await asyncio.wait_for(partition_counts(self._config, [self._topic]),
                                            self._config.connect_timeout_s)  # fmt: skip
        except (KafkaError, OSError, TimeoutError) as exc:
            where = self._config.bootstrap_servers
            raise KafkaUnreachable(f"cannot reach Kafka at {where}: {_describe(exc)}") from None
        partitions = counts.get(self._topic, 0)
        if partitions == 0:
            raise KafkaUnreachable(f"topic {self._topic} does not exist: run `opswarm up --topics-only`")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=f"{self._config.client_id_prefix}-storm-observer",
            group_id=None, enable_auto_commit=False, isolation_level="read_committed",
            request_timeout_ms=int(self._config.request_timeout_s * 1000),
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )  # fmt: skip
        assigned = [TopicPartition(self._topic, partition) for partition in range(partitions)]
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                await consumer.start()
                consumer.assign(assigned)
                await consumer.seek_to_end(*assigned)
                for partition in assigned:  # resolve the positions now, before anything is sent
                    await consumer.position(partition)
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            raise KafkaUnreachable(f"cannot read {self._topic}: {_describe(exc)}") from None
        self._consumer = consumer
        log.info("storm observer at the end of the triage topic", extra={"topic": self._topic,
                                                                         "partitions": partitions})  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Read and account until `stop` is set."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while not stop.is_set():
            async with asyncio.timeout(self._config.request_timeout_s):
                batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS_PER_POLL)
            if not batches:
                continue
            observed_at = self._clock()
            for records in batches.values():
                for record in records:
                    self._feed(record.value, observed_at)
            self.changed.set()

    async def stop(self) -> None:
        if self._consumer is not None:
            await asyncio.wait_for(self._consumer.stop(), self._config.request_timeout_s)
            self._consumer = None

    async def __aenter__(self) -> TriageObserver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _feed(self, raw: bytes | None, observed_at: float) -> None:
        self.records += 1
        try:
            triaged = AlertsTriaged.model_validate_json(raw or b"")
        except ValidationError as exc:
            self.undecodable += 1
            log.warning("triage record is no AlertsTriaged", extra={"topic": self._topic, "error": str(exc)[:300]})
            return
        self._account.record_triaged(triaged.source_topic, triaged.source_partition, triaged.outcomes, observed_at)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
