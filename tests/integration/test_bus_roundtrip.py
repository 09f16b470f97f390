"""Every event type survives a trip through Kafka, on the topic and key the registry gives it."""

from __future__ import annotations

import uuid

import pytest

from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.producer import EventPublisher
from bus.topics import route_for
from tests.event_samples import sample_events
from tests.integration.kafka_reading import TopicReader

pytestmark = pytest.mark.integration


async def test_every_event_type_round_trips_through_kafka(kafka_config: KafkaConfig) -> None:
    events = sample_events(incident_id=f"inc-{uuid.uuid4().hex[:8]}")
    by_id = {e.event_id: e for e in events}
    topics = sorted({kafka_config.topic(route_for(e).topic) for e in events})
    async with TopicReader(kafka_config, topics) as reader, EventPublisher(kafka_config, client_id="test") as publisher:
        acks = await publisher.publish_many(events)
        assert [a.topic for a in acks] == [kafka_config.topic(route_for(e).topic) for e in events]
        records = await reader.until(lambda rs: by_id.keys() <= {_event_id(r) for r in rs})

    seen = {}
    for record in records:
        if _event_id(record) in by_id:
            seen[_event_id(record)] = record
    for event_id, event in by_id.items():
        record = seen[event_id]
        decoded = decode_event(record.value)
        assert decoded == event, event.type
        assert record.topic == kafka_config.topic(route_for(event).topic)
        assert record.key == route_for(event).key(event).encode()
        assert dict(record.headers)["traceparent"] == event.trace.traceparent.encode()


async def test_events_of_one_incident_keep_their_order(kafka_config: KafkaConfig) -> None:
    events = [e for e in sample_events(incident_id=f"inc-{uuid.uuid4().hex[:8]}") if e.type.startswith("action.")]
    topic = kafka_config.topic(route_for(events[0]).topic)
    wanted = [e.event_id for e in events]
    async with TopicReader(kafka_config, [topic]) as reader, EventPublisher(kafka_config, client_id="test") as publisher:
        await publisher.publish_many(events)
        records = await reader.until(lambda rs: set(wanted) <= {_event_id(r) for r in rs})
    order = [_event_id(r) for r in records if _event_id(r) in set(wanted)]
    assert order == wanted


def _event_id(record) -> str:  # noqa: ANN001
    try:
        return decode_event(record.value).event_id
    except ValueError:
        return ""
