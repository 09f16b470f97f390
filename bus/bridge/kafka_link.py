"""The bridge's producer: started lazily and again after a failure, so that the bridge outlives Kafka's outages.

- `connect` (at start-up) tries once; a failure is logged, not raised: the bridge serves anyway and says 503.
- `publish` gets a started producer (starting one if there is none: one attempt at a time, shared by the
  requests that wait for it, at most one every START_BACKOFF_S) and waits until Kafka acknowledged every event
  (acks=all), all within the request's time budget; else `KafkaUnavailable`.
- A publish that failed or ran out of time retires its producer: it stops sending and the records it still
  holds are failed, so they are never delivered after the 503 that told the sender to retry (an idempotent
  aiokafka producer never expires a batch: it would retry them until Kafka is back, and they would land next
  to the sender's retry). The next request starts a new producer. A record already on the wire when time ran
  out may still land: the sender's retry then carries the same event id (see alert_events), which consumers
  recognise.
- Requests hand their records to the producer one request at a time, in arrival order (`_turn`, a FIFO lock).
  aiokafka keeps one open batch per partition: when it is full, every request with a record for it waits until
  the sender drains it, and then they all race for the next one, against newcomers too. Under load some request
  lost that race again and again (a hand-over of several seconds, then a 503, while its neighbours took 0.1 s);
  in turn, a request's wait is the requests ahead of it. A request whose time runs out before it handed over
  anything has nothing in the producer: it answers 503 and the producer stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from bus.config import KafkaConfig
from bus.events import Event
from bus.producer import build_producer, event_headers
from bus.topics import ALERTS, route_for

log = logging.getLogger(__name__)

CLIENT_ID = "bridge"
# A failed start is not tried again sooner than this: requests in between get 503 at once.
START_BACKOFF_S = 0.5


class KafkaUnavailable(Exception):
    """Kafka did not take the events (unreachable, refused, or no acknowledgement in time: `timed_out`)."""

    def __init__(self, detail: str, *, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timed_out = timed_out


@dataclass(frozen=True)
class _Started:
    producer: AIOKafkaProducer


class KafkaLink:
    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._started: _Started | None = None
        self._starting: asyncio.Task[_Started] | None = None
        self._last_failure = "not connected yet"
        self._next_start_at = 0.0
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._turn = asyncio.Lock()

    async def connect(self, timeout_s: float) -> bool:
        """Start the producer now if Kafka answers within `timeout_s`; False (logged) if it does not."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer()
        except (KafkaUnavailable, TimeoutError):
            log.warning("kafka not reachable at start-up", extra={"reason": self._last_failure})
            return False
        return True

    async def publish(self, events: Sequence[Event], values: Sequence[bytes], timeout_s: float) -> None:
        """Return once Kafka acknowledged every event; KafkaUnavailable if it did not within `timeout_s`.

        `values` are the events encoded (encode_event; the bridge encoded them to check their size already).
        Like EventPublisher.publish_many (same routing, keys and headers, acks=all), but waiting with
        asyncio.wait: giving up cancels nothing, so the records' futures stay with the producer, whose retirement
        fails them (a cancelled gather would leave its CancelledError unretrieved).
        """
        if len(values) != len(events):
            raise ValueError("one encoded value per event")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                started = await self._producer()
        except TimeoutError:
            raise KafkaUnavailable(f"could not connect to Kafka within {timeout_s:g} s: {self._last_failure}") from None
        acks: list[asyncio.Future[RecordMetadata]] = []
        try:
            async with asyncio.timeout_at(deadline), self._turn:
                for event, value in zip(events, values, strict=True):
                    route = route_for(event)
                    acks.append(await started.producer.send(
                        self._config.topic(route.topic), value=value, key=route.key(event).encode(),
                        headers=event_headers(event),
                    ))  # fmt: skip
            if acks:
                await asyncio.wait(acks, timeout=max(0.0, deadline - loop.time()))
            _require_acknowledged(acks)
        except TimeoutError:
            if not acks:  # its turn did not come in time: nothing of it is in the producer
                raise KafkaUnavailable(
                    f"Kafka did not take the events within {timeout_s:g} s (the bridge is busy)", timed_out=True
                ) from None
            self._retire(started, "no acknowledgement in time")
            raise KafkaUnavailable(f"Kafka did not acknowledge within {timeout_s:g} s", timed_out=True) from None
        except KafkaError as exc:
            self._retire(started, f"publish failed: {_describe(exc)}")
            raise KafkaUnavailable(f"Kafka refused the events: {_describe(exc)}") from None
        finally:
            for ack in acks:  # those given up on end with the retired producer; nobody reads them any more
                ack.add_done_callback(_consume_outcome)

    async def problem(self) -> str | None:
        """None when a producer is started and the broker answers with the alerts topic's metadata, else why not."""
        try:
            started = await self._producer()
        except KafkaUnavailable as exc:
            return f"kafka: {exc.detail}"
        topic = self._config.topic(ALERTS)
        try:
            metadata = await started.producer.client.fetch_all_metadata()
        except KafkaError as exc:
            return f"kafka: no metadata: {_describe(exc)}"
        if topic not in metadata.topics():
            return f"kafka: topic {topic} does not exist"
        return None

    async def close(self) -> None:
        """Stop the producer (sending what it holds, within the request timeout) and any being retired."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._started is not None:
            await self._stop(self._started.producer)
            self._started = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _producer(self) -> _Started:
        if self._started is not None:
            return self._started
        if self._closed:
            raise KafkaUnavailable("the bridge is shutting down")
        if self._starting is None:
            wait_s = self._next_start_at - time.monotonic()
            if wait_s > 0:
                raise KafkaUnavailable(f"Kafka unreachable ({self._last_failure}); next attempt in {wait_s:.1f} s")
            self._starting = asyncio.create_task(self._start())
            self._starting.add_done_callback(_consume_outcome)
        # Shielded: a request that runs out of time leaves the attempt running for the next one.
        return await asyncio.shield(self._starting)

    async def _start(self) -> _Started:
        producer = build_producer(self._config, client_id=CLIENT_ID)
        try:
            await asyncio.wait_for(producer.start(), self._config.connect_timeout_s)
        except BaseException as exc:  # a failure, or close() cancelling: either way leave nothing half-started
            self._starting = None
            if isinstance(exc, Exception):
                self._last_failure = _describe(exc)
                self._next_start_at = time.monotonic() + START_BACKOFF_S
            await self._stop(producer)
            if isinstance(exc, (KafkaError, OSError, TimeoutError)):
                raise KafkaUnavailable(f"Kafka unreachable: {self._last_failure}") from None
            raise
        self._starting = None
        log.info("kafka producer started", extra={"bootstrap_servers": self._config.bootstrap_servers})
        self._started = _Started(producer)
        return self._started

    def _retire(self, started: _Started, reason: str) -> None:
        """Drop a producer whose publish failed; it is discarded in the background."""
        if self._started is not started:
            return  # another request retired it already
        self._started = None
        self._last_failure = reason
        task = asyncio.create_task(self._discard(started.producer, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.warning("kafka producer retired", extra={"reason": reason})

    async def _discard(self, producer: AIOKafkaProducer, reason: str) -> None:
        """Stop sending, fail the records still held, close."""
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                await producer._sender.close()  # requests in flight end; nothing new goes out
        except Exception:  # noqa: BLE001 - failing the records below is what matters
            log.warning("kafka producer's sender did not stop cleanly", exc_info=True)
        try:
            _fail_held_records(producer, KafkaError(f"producer retired by the bridge: {reason}"))
        except Exception:  # noqa: BLE001 - aiokafka changed: its records may land late (same event ids)
            log.warning("records of a retired producer could not be failed", exc_info=True)
        await self._stop(producer)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._config.request_timeout_s)
        except Exception:  # noqa: BLE001 - closing its connections below is all that is left to do
            log.warning("kafka producer did not stop cleanly", exc_info=True)
            try:
                await asyncio.wait_for(producer.client.close(), self._config.request_timeout_s)
            except Exception:  # noqa: BLE001
                log.warning("kafka client did not close", exc_info=True)


def _fail_held_records(producer: AIOKafkaProducer, error: KafkaError) -> None:
    """Fail every batch a producer (its sender stopped) still holds, as aiokafka does when its sender dies.

    aiokafka has no "close without flushing" (Java's close(Duration.ZERO)), hence its internals here (pinned by
    aiokafka<0.15 in pyproject.toml). Two quirks of its fail_all are evened out: a batch put back for a retry
    has left the pending set, though its done-callback removes it from there (KeyError); and the batches'
    drain waiters get the error but nobody awaits them ("exception was never retrieved").
    """
    accumulator = producer._message_accumulator
    for queue in accumulator._batches.values():
        accumulator._pending_batches.update(queue)
    batches = list(accumulator._pending_batches)
    accumulator.fail_all(error)
    for batch in batches:
        if batch._drain_waiter.done() and not batch._drain_waiter.cancelled():
            batch._drain_waiter.exception()


def _require_acknowledged(acks: list[asyncio.Future[RecordMetadata]]) -> None:
    """TimeoutError if an acknowledgement is missing, KafkaError if a record was refused."""
    if not all(ack.done() for ack in acks):
        raise TimeoutError
    for ack in acks:
        problem = KafkaError("cancelled") if ack.cancelled() else ack.exception()
        if problem is not None:
            raise problem if isinstance(problem, KafkaError) else KafkaError(_describe(problem))


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    # Nobody may be waiting any more when it fails: a start attempt (its error is in _last_failure and the logs),
    # a record given up on (the request answered 503).
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and not text.startswith(name) else text or name
