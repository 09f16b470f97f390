"""The consumer loop every agent runs: decode, handle, publish what the handler returns, commit.

Two delivery modes:

- AT_LEAST_ONCE: outputs are published (acks=all) and only then the consumed offsets are committed. A crash
  between the two redelivers the record, so handlers must be idempotent (agents dedup by event_id).
- EXACTLY_ONCE: outputs, dead letters and the consumed offsets go in one Kafka transaction. A crash before the
  commit aborts the transaction: consumers reading `read_committed` never see the outputs, and the record is
  handled again by the restarted process. Use it where an agent consumes and produces.

Poison records (undecodable, schema-invalid, or a handler's non-retriable error) go to the dead-letter topic
with their reason; retriable errors back off and retry, bounded, then dead-letter. Setting the stop event
finishes the record in hand, commits and closes.

A handler takes one event at a time; a batch handler takes the decoded events of one partition's batch at once
(monitoring: one Redis round trip and one set of outputs per batch). When a batch handler rejects a batch, its
events are handed over one at a time, so that only the poison one is dead-lettered.

Rebalances: a partition is given up only once the batch in hand is committed (the rebalance listener waits for
it), so the partition's next owner starts exactly where this one stopped: nothing handled twice, nothing skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.consumer_contracts import (
    BatchHandler,
    ConsumerStats,
    Delivery,
    FinishBatchFirst,
    Handler,
    RecordContext,
    RetryPolicy,
)
from bus.dead_letters import DeadLetter
from bus.errors import EventDecodeError, NonRetriableError, RetriableError
from bus.events import AnyEvent, Event
from bus.producer import EventPublisher, build_producer
from bus.topics import DLQ

log = logging.getLogger(__name__)

RETRIABLE = (RetriableError, TimeoutError, ConnectionError)
# How long `lag()` waits, in all, for positions being reset (those partitions count 0 for now).
_LAG_TIMEOUT_S = 1.0


class _Stopping(Exception):
    """The stop event was set while a record waited to be retried: leave it uncommitted."""


@dataclass
class _Outcome:
    outputs: Sequence[Event] = ()
    dead_letter: DeadLetter | None = None


_NOTHING = _Outcome()


class EventConsumer:
    """Runs a handler over the events of some topics with the chosen delivery guarantee."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        name: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        delivery: Delivery = Delivery.AT_LEAST_ONCE,
        transactional_id: str | None = None,
        event_types: frozenset[str] | None = None,
        retry: RetryPolicy = RetryPolicy(),
        dlq_topic: str | None = None,
        max_batch: int = 500,
        poll_timeout_s: float = 0.25,
        start_at: Literal["earliest", "latest"] = "earliest",
    ) -> None:
        if delivery is Delivery.EXACTLY_ONCE and not transactional_id:
            raise ValueError("exactly-once delivery needs a stable transactional_id per agent instance")
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self._config = config
        self._name = name
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._batch_handler = batch_handler
        self._delivery = delivery
        self._event_types = event_types
        self._start_at = start_at
        self._retry = retry
        self._dlq_topic = dlq_topic or config.topic(DLQ)
        self._max_batch = max_batch
        self._poll_timeout_ms = int(poll_timeout_s * 1000)
        self.stats = ConsumerStats()
        # Held while a batch is handled and committed; a rebalance waits for it before giving partitions up.
        self._batch_lock = asyncio.Lock()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"{config.client_id_prefix}-{name}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=start_at,
            isolation_level="read_committed",
            max_poll_records=max_batch,
            request_timeout_ms=int(config.request_timeout_s * 1000),
        )
        self._producer = build_producer(
            config,
            client_id=name,
            transactional_id=transactional_id if delivery is Delivery.EXACTLY_ONCE else None,
        )
        self._publisher = EventPublisher(config, client_id=name, producer=self._producer)
        self._started = asyncio.Event()

    async def wait_started(self) -> None:
        """Returns once the consumer joined its group and owns partitions (for tests and health)."""
        await self._started.wait()

    @property
    def is_started(self) -> bool:
        """Whether `wait_started()` would return at once (it stays true once set)."""
        return self._started.is_set()

    @property
    def name(self) -> str:
        return self._name

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def lag(self) -> int:
        """Events of the current assignment not consumed yet: the sum of (end of log − position) per partition.

        The end is the last stable offset (reading `read_committed`, nothing past an open transaction is
        delivered), else the highwater mark. Partitions whose end or position is not known yet (no fetch
        answered, or the position is still being reset) count 0, as does one revoked meanwhile.
        """
        ends: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            stable = self._consumer.last_stable_offset(tp)
            end = stable if stable is not None and stable >= 0 else self._consumer.highwater(tp)
            if end is not None:
                ends[tp] = end
        total = 0
        deadline = asyncio.get_running_loop().time() + _LAG_TIMEOUT_S
        for tp, end in ends.items():
            try:
                async with asyncio.timeout_at(deadline):  # a known position answers without waiting
                    position = await self._consumer.position(tp)
            except (TimeoutError, IllegalStateError):
                continue
            total += max(0, end - position)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish the record in hand, commit and close."""
        self._consumer.subscribe(self._topics, listener=FinishBatchFirst(self._batch_lock, self._name))
        await asyncio.wait_for(self._producer.start(), self._config.connect_timeout_s)
        try:
            await asyncio.wait_for(self._consumer.start(), self._config.connect_timeout_s)
            try:
                await self._loop(stop)
            finally:
                await self._consumer.stop()
        finally:
            await self._producer.stop()
        log.info("consumer stopped", extra={"consumer": self._name, "handled": self.stats.handled})

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_batch)
            if self._consumer.assignment() and not self._started.is_set():
                # Resolve every assigned partition's position now, so that an event published after
                # `wait_started()` returns is seen even by a group that starts at "latest".
                for tp in self._consumer.assignment():
                    await self._consumer.position(tp)
                if self._start_at == "latest":
                    await self._commit_starting_points(batch)
                self._started.set()
            if not batch:
                continue
            self.stats.batches += 1
            try:
                async with self._batch_lock:
                    if self._delivery is Delivery.EXACTLY_ONCE:
                        await self._process_in_transaction(batch, stop)
                    else:
                        await self._process_then_commit(batch, stop)
                failures = 0
            except _Stopping:
                return
            except ProducerFenced:
                # A newer instance with the same transactional id took over: this one must not go on.
                log.error("producer fenced by a newer instance; stopping", extra={"consumer": self._name})
                raise
            except Exception:
                # Infrastructure trouble (Kafka unavailable, fenced, timed out): nothing of this batch past the
                # last commit counts, so go back to the committed offsets and try again after a bounded backoff.
                failures += 1
                log.exception("batch failed; rewinding to committed offsets", extra={"consumer": self._name})
                self.stats.redeliveries += 1
                self._rewind(batch)
                await _wait_or_stop(stop, self._retry.backoff(min(failures, self._retry.max_attempts)))

    async def _commit_starting_points(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Make "latest" a durable starting point: commit it for every partition the group has no offset for.

        Otherwise a process that dies before its first commit would start at the end again after its restart and
        skip what arrived meanwhile (the very event it was handling, say).
        """
        starting: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            if await self._consumer.committed(tp) is None:
                records = batch.get(tp)
                starting[tp] = records[0].offset if records else await self._consumer.position(tp)
        if starting:
            await self._consumer.commit(starting)
            log.info("starting offsets committed", extra={"consumer": self._name, "partitions": len(starting)})

    async def _process_then_commit(self, batch: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event) -> None:
        offsets: dict[TopicPartition, int] = {}
        pending: list[asyncio.Future] = []
        try:
            await self._handle_partitions(batch, stop, offsets, pending)
        except _Stopping:
            await self._commit(pending, offsets)
            raise
        await self._commit(pending, offsets)

    async def _commit(self, pending: list[asyncio.Future], offsets: dict[TopicPartition, int]) -> None:
        await _all_acknowledged(pending, self._config.publish_timeout_s)
        if offsets:
            await asyncio.wait_for(self._consumer.commit(offsets), self._config.request_timeout_s)

    async def _process_in_transaction(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> None:
        offsets: dict[TopicPartition, int] = {}
        pending: list[asyncio.Future] = []
        stopping = False
        async with self._producer.transaction():
            try:
                await self._handle_partitions(batch, stop, offsets, pending)
            except _Stopping:
                stopping = True
            await _all_acknowledged(pending, self._config.publish_timeout_s)
            if offsets:
                await self._producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}, self._group_id
                )
        if stopping:
            raise _Stopping

    async def _handle_partitions(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        stop: asyncio.Event,
        offsets: dict[TopicPartition, int],
        pending: list[asyncio.Future],
    ) -> None:
        """Handle every record, emitting outputs as they come and noting each partition's next offset."""
        for tp, records in batch.items():
            if self._batch_handler is not None:
                if stop.is_set():
                    raise _Stopping
                for outcome in await self._handle_batch(records, stop):
                    if outcome is not _NOTHING:
                        pending.extend(await self._emit(outcome))
                offsets[tp] = records[-1].offset + 1
                continue
            for record in records:
                if stop.is_set():
                    raise _Stopping
                outcome = await self._handle(record, stop)
                if outcome is not _NOTHING:
                    pending.extend(await self._emit(outcome))
                offsets[tp] = record.offset + 1

    async def _handle_batch(self, records: list[ConsumerRecord], stop: asyncio.Event) -> list[_Outcome]:
        """One partition's records through the batch handler: dead letters for the undecodable ones, then one
        call for the rest (retried as a whole when retriable); a rejected batch is split into single events."""
        assert self._batch_handler is not None
        outcomes: list[_Outcome] = []
        items: list[tuple[AnyEvent, RecordContext, ConsumerRecord]] = []
        for record in records:
            event = self._decoded(record)
            if isinstance(event, _Outcome):  # dead-lettered, or not a type this consumer takes
                if event is not _NOTHING:
                    outcomes.append(event)
                continue
            context = RecordContext(record.topic, record.partition, record.offset, record.key, record.timestamp, 1)
            items.append((event, context, record))
        if not items:
            return outcomes
        attempt = 1
        while True:
            try:
                outputs = await self._batch_handler([(event, ctx._replace(attempt=attempt)) for event, ctx, _ in items])
            except RETRIABLE as exc:
                if attempt >= self._retry.max_attempts:
                    break  # one by one below: each event gets its own retries and, if need be, its dead letter
                self.stats.retries += 1
                log.warning(
                    "batch handler failed; retrying",
                    extra={"consumer": self._name, "attempt": attempt, "error": repr(exc), "events": len(items)},
                )
                if await _wait_or_stop(stop, self._retry.backoff(attempt)):
                    raise _Stopping from exc
                attempt += 1
                continue
            except Exception as exc:  # noqa: BLE001 - which event is to blame is found out one by one below
                log.warning(
                    "batch handler rejected a batch; handling its events one by one",
                    extra={"consumer": self._name, "error": repr(exc), "events": len(items)},
                )
                break
            self.stats.handled += len(items)
            outcomes.append(_Outcome(outputs=list(outputs)) if outputs else _NOTHING)
            return outcomes
        for event, _, record in items:
            outcomes.append(await self._handle(record, stop, decoded=event))
        return outcomes

    async def _emit(self, outcome: _Outcome) -> list[asyncio.Future]:
        futures = [await self._publisher.enqueue(event) for event in outcome.outputs]
        if outcome.dead_letter is not None:
            letter = outcome.dead_letter
            futures.append(
                await self._producer.send(self._dlq_topic, value=letter.value, key=letter.key, headers=letter.headers())
            )
        return futures

    def _decoded(self, record: ConsumerRecord) -> AnyEvent | _Outcome:
        """The record's event; else its dead letter (undecodable), or _NOTHING (a type this consumer skips)."""
        try:
            event = decode_event(record.value)
        except EventDecodeError as exc:
            return self._dead_letter(record, str(exc), "decode", attempts=1)
        if self._event_types is not None and event.type not in self._event_types:
            self.stats.skipped += 1
            return _NOTHING
        return event

    async def _handle(self, record: ConsumerRecord, stop: asyncio.Event, decoded: AnyEvent | None = None) -> _Outcome:
        event = decoded if decoded is not None else self._decoded(record)
        if isinstance(event, _Outcome):
            return event
        attempt = 1
        while True:
            context = RecordContext(record.topic, record.partition, record.offset, record.key, record.timestamp, attempt)
            try:
                outputs = await self._call_one(event, context)
            except NonRetriableError as exc:
                return self._dead_letter(record, f"handler rejected the event: {exc}", "non_retriable", attempt)
            except RETRIABLE as exc:
                if attempt >= self._retry.max_attempts:
                    reason = f"retries exhausted after {attempt} attempts: {type(exc).__name__}: {exc}"
                    return self._dead_letter(record, reason, "retries_exhausted", attempt)
                self.stats.retries += 1
                log.warning(
                    "handler failed; retrying",
                    extra={"consumer": self._name, "attempt": attempt, "error": repr(exc), "offset": record.offset},
                )
                if await _wait_or_stop(stop, self._retry.backoff(attempt)):
                    raise _Stopping from exc
                attempt += 1
                continue
            except Exception as exc:
                reason = f"handler failed: {type(exc).__name__}: {exc}"
                return self._dead_letter(record, reason, "handler_error", attempt)
            self.stats.handled += 1
            return _Outcome(outputs=list(outputs)) if outputs else _NOTHING

    async def _call_one(self, event: AnyEvent, context: RecordContext) -> Sequence[Event] | None:
        if self._handler is not None:
            return await self._handler(event, context)
        assert self._batch_handler is not None
        return await self._batch_handler([(event, context)])

    def _dead_letter(self, record: ConsumerRecord, reason: str, error_type: str, attempts: int) -> _Outcome:
        self.stats.dead_lettered += 1
        self.stats.dead_letter_reasons.append(reason)
        log.warning(
            "record dead-lettered",
            extra={
                "consumer": self._name,
                "reason": reason,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
        letter = DeadLetter(
            reason=reason,
            error_type=error_type,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            consumer_group=self._group_id,
            attempts=attempts,
            failed_at=datetime.now(UTC),
            key=record.key,
            value=record.value,
            original_headers=tuple(record.headers or ()),
        )
        return _Outcome(dead_letter=letter)

    def _rewind(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Seek back to the first record of the failed batch: every batch ends in a commit, so that is exactly
        where the last commit left each partition."""
        owned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in owned and records:
                self._consumer.seek(tp, records[0].offset)


async def _all_acknowledged(pending: list[asyncio.Future], timeout_s: float) -> None:
    """Wait for every send; raise the first failure, having read them all (no "exception never retrieved")."""
    if not pending:
        return
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout_s)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` unless stop is set first; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
