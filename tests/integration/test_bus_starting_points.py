"""A group that starts at "latest" makes that starting point durable: a consumer that dies before its first
commit resumes where the group started, so the event it was handling is not skipped."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bus.config import KafkaConfig
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.events import AnyEvent, ChangeRecorded, Event
from bus.producer import EventPublisher
from tests.integration.kafka_reading import fresh_topic

pytestmark = pytest.mark.integration


def _consumer(config: KafkaConfig, topic: str, group: str, seen: list[str], hold: asyncio.Event) -> EventConsumer:
    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event]:
        seen.append(event.event_id)
        await hold.wait()  # the first consumer never finishes its event
        return []

    return EventConsumer(
        config, name=f"start-{group}", group_id=group, topics=[topic], handler=handle,
        delivery=Delivery.AT_LEAST_ONCE, start_at="latest",
    )  # fmt: skip


@pytest.mark.parametrize("partitions", [1, 3])
async def test_a_consumer_dying_before_its_first_commit_does_not_skip_the_event(
    kafka_config: KafkaConfig, partitions: int
) -> None:
    topic = await fresh_topic(kafka_config, "start", partitions)
    group = f"start-{uuid.uuid4().hex[:8]}"
    change = ChangeRecorded(produced_by="tests", service="checkout", kind="deploy", version="v2")
    first_seen: list[str] = []
    stuck, stop_first = asyncio.Event(), asyncio.Event()
    first = _consumer(kafka_config, topic, group, first_seen, stuck)
    running = asyncio.create_task(first.run(stop_first))
    await asyncio.wait_for(first.wait_started(), 60)
    async with EventPublisher(kafka_config, client_id="tests") as publisher:
        await publisher.enqueue(change, topic=topic)
    async with asyncio.timeout(30):
        while not first_seen:
            await asyncio.sleep(0.02)
    running.cancel()  # dies in the middle of the event: nothing of it is committed
    with pytest.raises(asyncio.CancelledError):
        await running

    again: list[str] = []
    done, stop_second = asyncio.Event(), asyncio.Event()
    done.set()
    second = _consumer(kafka_config, topic, group, again, done)
    resumed = asyncio.create_task(second.run(stop_second))
    try:
        async with asyncio.timeout(60):
            while not again:
                await asyncio.sleep(0.02)
    finally:
        stop_second.set()
        await resumed
    assert again == [change.event_id]
