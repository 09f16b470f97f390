"""Watching the swarm from outside: every event on the incidents, actions and escalations topics from now on.

The watcher reads without a consumer group (it commits nothing and disturbs no agent), from the end of each
partition as it was when the watcher started, and lets a scenario wait for a condition over what it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.admin import partition_counts
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.errors import EventDecodeError
from bus.events import Event
from bus.topics import ACTIONS, ESCALATIONS, INCIDENTS, TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
WATCHED = (INCIDENTS, ACTIONS, ESCALATIONS)


class SwarmWatch:
    def __init__(self, config: KafkaConfig, topics: tuple[TopicSpec, ...] = WATCHED) -> None:
        self._config = config
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers, enable_auto_commit=False, isolation_level="read_committed",
            client_id=f"{config.client_id_prefix}-scenario-watch",
        )  # fmt: skip
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SwarmWatch:
        await asyncio.wait_for(self._consumer.start(), self._config.connect_timeout_s)
        try:
            await self._assign_at_end()
        except BaseException:
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._read())
        return self

    async def _assign_at_end(self) -> None:
        counts = await partition_counts(self._config, [self._config.topic(spec) for spec in self._topics])
        partitions = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve now: whatever is published after __aenter__ returns is seen
            await self._consumer.position(tp)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            fresh = []
            for records in batch.values():
                for record in records:
                    try:
                        fresh.append(decode_event(record.value))
                    except EventDecodeError:
                        continue  # not ours to judge: the agents dead-letter it
            if fresh:
                async with self._changed:
                    self.events.extend(fresh)
                    self._changed.notify_all()

    async def wait_for(self, find: Callable[[list[Event]], T | None], timeout_s: float, what: str) -> T:
        """The first non-None answer of `find` over the events seen so far, waiting up to `timeout_s`."""

        async def condition() -> T:
            async with self._changed:
                while (found := find(self.events)) is None:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(condition(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"gave up after {timeout_s:g} s waiting for {what}") from None

    def about(self, incident_id: str) -> list[Event]:
        return [e for e in self.events if e.incident_id == incident_id]
