"""Poison records go to the dead-letter topic with their reason and origin; the consumer keeps going."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bus.codec import encode_event
from bus.config import KafkaConfig
from bus.consumer import Delivery, EventConsumer, RecordContext, RetryPolicy
from bus.dead_letters import DeadLetter
from bus.errors import NonRetriableError, RetriableError
from bus.events import AnyEvent, IncidentUpdated
from tests.integration.kafka_reading import TopicReader, fresh_topic, produce_raw

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


def _update(reason: str) -> IncidentUpdated:
    return IncidentUpdated(produced_by="tests", incident_id="inc-dlq", reason=reason)


@pytest.mark.parametrize("batched", [False, True], ids=["handler", "batch_handler"])
@pytest.mark.parametrize("delivery", list(Delivery))
async def test_poison_records_are_dead_lettered_and_the_loop_goes_on(
    kafka_config: KafkaConfig, delivery: Delivery, batched: bool
) -> None:
    """With a batch handler, a batch that fails is retried whole, then split: the same events end the same way."""
    source = await fresh_topic(kafka_config, "dlq-source", partitions=1)
    dlq = await fresh_topic(kafka_config, "dlq", partitions=1)
    flaky_attempts: dict[str, int] = {}
    handled: list[str] = []

    async def handler(event: AnyEvent, ctx: RecordContext, done: list[str] | None = None) -> None:
        assert isinstance(event, IncidentUpdated)
        if event.reason == "reject":
            raise NonRetriableError("reason 'reject' is not allowed")
        if event.reason == "flaky":
            flaky_attempts[event.event_id] = ctx.attempt
            if ctx.attempt < 3:
                raise RetriableError("downstream busy")
        if event.reason == "always-busy":
            raise RetriableError("downstream still busy")
        if event.reason == "bug":
            raise KeyError("missing")
        (handled if done is None else done).append(event.reason)

    async def batch_handler(batch: list[tuple[AnyEvent, RecordContext]]) -> None:
        done: list[str] = []
        for event, ctx in batch:
            await handler(event, ctx, done)
        handled.extend(done)  # only a batch handled whole counts

    inputs: list[tuple[bytes | None, bytes | None]] = [
        (b"k", encode_event(_update("first"))),
        (b"k", b"{not json"),
        (b"k", b'{"type": "incident.updated", "produced_by": "tests"}'),
        (b"k", encode_event(_update("reject"))),
        (b"k", encode_event(_update("flaky"))),
        (b"k", encode_event(_update("always-busy"))),
        (b"k", encode_event(_update("bug"))),
        (b"k", encode_event(_update("last"))),
    ]
    await produce_raw(kafka_config, source, inputs)

    consumer = EventConsumer(
        kafka_config,
        name="dlq-test",
        group_id=f"dlq-test-{uuid.uuid4().hex[:8]}",
        topics=[source],
        handler=None if batched else handler,
        batch_handler=batch_handler if batched else None,
        delivery=delivery,
        transactional_id=f"dlq-test-{uuid.uuid4().hex[:8]}",
        retry=FAST_RETRY,
        dlq_topic=dlq,
    )
    stop = asyncio.Event()
    async with TopicReader(kafka_config, [dlq]) as reader:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer.run(stop))
            letters = await reader.until(lambda rs: len(rs) >= 5)
            await _wait(lambda: "last" in handled)
            stop.set()

    assert handled == ["first", "flaky", "last"]
    assert flaky_attempts and list(flaky_attempts.values()) == [3]
    dead = [DeadLetter.from_record(r.key, r.value, r.headers) for r in letters]
    assert [d.source_offset for d in dead] == [1, 2, 3, 5, 6]
    assert all(d.source_topic == source and d.source_partition == 0 for d in dead)
    assert [d.value for d in dead] == [inputs[i][1] for i in (1, 2, 3, 5, 6)]
    assert [d.error_type for d in dead] == ["decode", "decode", "non_retriable", "retries_exhausted", "handler_error"]
    assert "invalid event" in dead[0].reason
    assert "reason: Field required" in dead[1].reason
    assert "reason 'reject' is not allowed" in dead[2].reason
    assert "retries exhausted after 3 attempts" in dead[3].reason and "still busy" in dead[3].reason
    assert "KeyError" in dead[4].reason
    assert consumer.stats.dead_lettered == 5


async def _wait(condition, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_fenced_transactional_consumer_stops_instead_of_looping(kafka_config: KafkaConfig) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import ProducerFenced

    source = await fresh_topic(kafka_config, "fenced")
    transactional_id = f"fenced-{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    async def handler(event: AnyEvent, ctx: RecordContext) -> list[IncidentUpdated]:
        handled.append(event.event_id)
        return [event.follow(IncidentUpdated, produced_by="fenced-test", reason="answer")]

    consumer = EventConsumer(
        kafka_config, name="fenced", group_id=transactional_id, topics=[source], handler=handler,
        delivery=Delivery.EXACTLY_ONCE, transactional_id=transactional_id,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(consumer.wait_started(), 30)
    usurper = AIOKafkaProducer(bootstrap_servers=kafka_config.bootstrap_servers, transactional_id=transactional_id)
    await usurper.start()  # InitProducerId bumps the epoch: the consumer's producer is now a zombie
    try:
        await produce_raw(kafka_config, source, [(b"k", encode_event(_update("after-fencing")))])
        with pytest.raises(ProducerFenced):
            await asyncio.wait_for(task, 30)
    finally:
        await usurper.stop()
    assert len(handled) == 1
