"""`make bench-bus`: events of about 1 KB through the bus runtime and through plain aiokafka, in the same run.

Both paths use the same broker, partitions, producer settings (acks=all, idempotent), in-flight window and
commit-per-batch consumer, so the ratio shows what the bus adds: building, encoding, decoding and validating
events, routing, and the consumer loop. Throughput is events consumed per second from the first send to the
last event handled, producer and consumer running at once. Latency is record create time to handling; it is
measured in a separate paced pass at a fixed rate below capacity (default 2,000 events/s), because at full speed
it only measures the backlog the benchmark itself builds.

Last line: `bench-bus: events=N bus_eps=N raw_eps=N ratio=R p99_ms=N`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bus.admin import ensure_topics
from bus.codec import encode_event
from bus.config import KafkaConfig
from bus.consumer import EventConsumer, RecordContext
from bus.events import AlertReceived, AnyEvent
from bus.producer import EventPublisher, build_producer
from bus.topics import TopicSpec
from deploy.settings import Settings

log = logging.getLogger(__name__)

PARTITIONS = 6
WINDOW = 5000  # sends in flight before waiting for their acknowledgements


WARMUP = 1000  # events sent first on every pass and left out of its figures (connections, metadata, JIT)


@dataclass
class PassResult:
    events: int
    seconds: float = 0.0
    measure_from_ms: float = float("inf")
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def eps(self) -> float:
        return self.events / self.seconds

    def record(self, create_time_ms: float) -> None:
        if create_time_ms >= self.measure_from_ms:
            self.latencies_ms.append(time.time() * 1000 - create_time_ms)

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


class BenchPath(Protocol):
    """One way of moving the records: the bus runtime or plain aiokafka."""

    received: int

    async def start(self, result: PassResult) -> None: ...
    async def send(self, i: int) -> asyncio.Future: ...
    async def stop(self) -> None: ...


def make_event(i: int, size: int) -> AlertReceived:
    """An alert padded so that its JSON is about `size` bytes."""
    base = AlertReceived(
        produced_by="bench",
        status="firing",
        alertname="HighErrorRate",
        service=f"svc-{i % 200}",
        severity="critical",
        labels={"alertname": "HighErrorRate", "namespace": "prod", "service": f"svc-{i % 200}", "pod": f"p-{i}"},
        annotations={"summary": "5xx rate above 5%"},
    )
    pad = max(0, size - len(encode_event(base)))
    return base.model_copy(update={"annotations": {"summary": "5xx rate above 5%", "description": "x" * pad}})


async def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark stalled: {what} not reached within {timeout_s}s")
        await asyncio.sleep(0.005)


async def _send(path: BenchPath, indices: range, rate: float | None) -> None:
    """Send records, at most `rate` per second if given, with a bounded window of unacknowledged sends."""
    pending: list[asyncio.Future] = []
    start = time.monotonic()
    for n, i in enumerate(indices):
        if rate is not None:
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the load, not synchronisation
        pending.append(await path.send(i))
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def run_pass(path: BenchPath, total: int, rate: float | None) -> PassResult:
    """Warm up, then send the measured records and wait until every one was consumed."""
    result = PassResult(total - WARMUP)
    await path.start(result)
    try:
        await _send(path, range(WARMUP), rate)
        await _wait_until(lambda: path.received >= WARMUP, 120, "warm-up consumed")
        result.measure_from_ms = time.time() * 1000
        started = time.monotonic()
        await _send(path, range(WARMUP, total), rate)
        await _wait_until(lambda: path.received >= total, 600, "every record consumed")
        result.seconds = time.monotonic() - started
    finally:
        await path.stop()
    return result


class BusPath:
    """EventPublisher in, EventConsumer (at-least-once, commit per batch) out."""

    def __init__(self, config: KafkaConfig, topic: str, events: list[AlertReceived]) -> None:
        self._config, self._topic, self._events = config, topic, events
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._consumer: EventConsumer | None = None
        self._publisher = EventPublisher(config, client_id="bench-bus")
        self.received = 0

    async def start(self, result: PassResult) -> None:
        async def handle(event: AnyEvent, ctx: RecordContext) -> None:
            result.record(ctx.timestamp_ms)
            self.received += 1

        self._consumer = EventConsumer(
            self._config, name="bench-bus", group_id=f"bench-bus-{uuid.uuid4().hex[:8]}", topics=[self._topic],
            handler=handle,
        )  # fmt: skip
        self._task = asyncio.create_task(self._consumer.run(self._stop))
        await asyncio.wait_for(self._consumer.wait_started(), self._config.connect_timeout_s)
        await self._publisher.start()

    async def send(self, i: int) -> asyncio.Future:
        return await self._publisher.enqueue(self._events[i], topic=self._topic)

    async def stop(self) -> None:
        await self._publisher.stop()
        self._stop.set()
        if self._task is not None:
            await self._task


class RawPath:
    """Plain aiokafka with the same settings: pre-encoded bytes in, bytes out, commit per batch."""

    def __init__(self, config: KafkaConfig, topic: str, values: list[bytes], keys: list[bytes]) -> None:
        self._topic, self._values, self._keys = topic, values, keys
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=config.bootstrap_servers,
            group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=500,
        )
        self._producer = build_producer(config, client_id="bench-raw")
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.received = 0

    async def start(self, result: PassResult) -> None:
        await self._consumer.start()
        while not self._consumer.assignment():
            await self._consumer.getmany(timeout_ms=100)
        await self._producer.start()
        self._task = asyncio.create_task(self._consume(result))

    async def _consume(self, result: PassResult) -> None:
        while not self._stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=250, max_records=500)
            for records in batch.values():
                for record in records:
                    result.record(record.timestamp)
                self.received += len(records)
            if batch:
                await self._consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})

    async def send(self, i: int) -> asyncio.Future:
        return await self._producer.send(self._topic, value=self._values[i], key=self._keys[i])

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self._producer.stop()
        await self._consumer.stop()


async def run(config: KafkaConfig, n: int, size: int, rounds: int, paced_rate: float, paced_events: int) -> str:
    """Alternate raw and bus passes for `rounds` rounds (so drift in the machine hits both alike), compare medians."""
    run_id = uuid.uuid4().hex[:8]
    kinds = [f"{path}-{r}" for r in range(rounds) for path in ("raw", "bus")] + ["raw-paced", "bus-paced"]
    specs = {kind: TopicSpec(f"opswarm.bench.{kind}.{run_id}.v1", PARTITIONS, 3600 * 1000) for kind in kinds}
    await ensure_topics(config, specs.values())
    names = {kind: config.topic(spec) for kind, spec in specs.items()}
    try:
        total = n + WARMUP
        events = [make_event(i, size) for i in range(total)]
        values = [encode_event(e) for e in events]
        keys = [e.service.encode() for e in events]
        raw_eps: list[float] = []
        bus_eps: list[float] = []
        for r in range(rounds):
            raw_eps.append((await run_pass(RawPath(config, names[f"raw-{r}"], values, keys), total, None)).eps)
            bus_eps.append((await run_pass(BusPath(config, names[f"bus-{r}"], events), total, None)).eps)
        paced_n = min(paced_events, n) + WARMUP
        raw_paced = await run_pass(RawPath(config, names["raw-paced"], values, keys), paced_n, paced_rate)
        bus_paced = await run_pass(BusPath(config, names["bus-paced"], events), paced_n, paced_rate)
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics(list(names.values()))
        finally:
            await admin.close()
    mean_size = sum(len(v) for v in values) / len(values)
    bus, raw = statistics.median(bus_eps), statistics.median(raw_eps)
    return "\n".join(
        [
            f"record size: {mean_size:.0f} bytes, partitions: {PARTITIONS}, window: {WINDOW}, rounds: {rounds}",
            "raw aiokafka events/s per round: " + " ".join(f"{x:.0f}" for x in raw_eps),
            "bus runtime  events/s per round: " + " ".join(f"{x:.0f}" for x in bus_eps),
            f"paced at {paced_rate:.0f}/s over {paced_n - WARMUP} events: raw p99 {raw_paced.p99_ms():.1f} ms, "
            f"bus p99 {bus_paced.p99_ms():.1f} ms",
            f"bench-bus: events={n} bus_eps={bus:.0f} raw_eps={raw:.0f} ratio={bus / raw:.2f} "
            f"p99_ms={bus_paced.p99_ms():.1f}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024, help="approximate JSON size of one event, bytes")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/bus throughput passes")
    parser.add_argument("--paced-rate", type=float, default=2000.0, help="events/s of the latency pass")
    parser.add_argument("--paced-events", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    print(asyncio.run(run(settings.kafka, args.events, args.size, args.rounds, args.paced_rate, args.paced_events)))


if __name__ == "__main__":
    main()
