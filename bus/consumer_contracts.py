"""What a consumer is given and gives back: delivery modes, retry policy, the handlers' shapes, a record's context,
its statistics, and the rebalance listener that lets partitions go only between batches (see bus.consumer)."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aiokafka import ConsumerRebalanceListener, TopicPartition

from bus.events import AnyEvent, Event

log = logging.getLogger("bus.consumer")


class Delivery(enum.StrEnum):
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for retriable handler errors."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))


class RecordContext(NamedTuple):
    """Where the event being handled came from (a tuple: one is built per record on the hot path)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    attempt: int


@dataclass
class ConsumerStats:
    handled: int = 0
    dead_lettered: int = 0
    retries: int = 0
    skipped: int = 0
    batches: int = 0
    redeliveries: int = 0
    dead_letter_reasons: list[str] = field(default_factory=list)


Handler = Callable[[AnyEvent, RecordContext], Awaitable[Sequence[Event] | None]]
# The events of one partition's batch, in offset order, each with its record's context.
BatchHandler = Callable[[Sequence[tuple[AnyEvent, RecordContext]]], Awaitable[Sequence[Event] | None]]


class FinishBatchFirst(ConsumerRebalanceListener):
    """Partitions are given up only after the batch in hand is committed (or rewound): the next owner starts at
    the offset this consumer committed last, so that no record is handled and committed by both."""

    def __init__(self, batch_lock: asyncio.Lock, name: str) -> None:
        self._batch_lock = batch_lock
        self._name = name

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch_lock:
            partitions = sorted(str(tp) for tp in revoked)
            log.info("partitions revoked", extra={"consumer": self._name, "partitions": partitions})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = sorted(str(tp) for tp in assigned)
        log.info("partitions assigned", extra={"consumer": self._name, "partitions": partitions})
