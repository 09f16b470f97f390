"""Event contracts: JSON round trip, tolerance of unknown fields, clear reasons for bad bytes, routing."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bus import events as ev
from bus.codec import decode_event, encode_event, event_json_schema
from bus.errors import EventDecodeError
from bus.topics import ALL_TOPICS, DLQ, ROUTES, route_for
from tests.event_samples import sample_events

SAMPLES = sample_events()


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in SAMPLES} == set(ev.ALL_EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_round_trip_is_lossless(event: ev.Event) -> None:
    decoded = decode_event(encode_event(event))
    assert type(decoded) is type(event)
    assert decoded == event


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_unknown_fields_are_tolerated(event: ev.Event) -> None:
    doc = json.loads(encode_event(event))
    doc["field_from_the_future"] = {"nested": [1, 2]}
    decoded = decode_event(json.dumps(doc).encode())
    assert decoded == event


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_events_are_frozen(event: ev.Event) -> None:
    with pytest.raises(ValidationError):
        event.produced_by = "someone else"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "invalid event"),
        (b'{"type": "alert.received"}', "produced_by"),
        (b'{"type": "no.such.event", "produced_by": "x"}', "type"),
        (b'{"produced_by": "x"}', "type"),
        (b"[1, 2, 3]", "invalid event"),
        (None, "tombstone"),
        (
            b'{"type": "diagnosis.completed", "produced_by": "x", "hypothesis": "h", "confidence": 7}',
            "confidence",
        ),
        (
            b'{"type": "action.proposed", "produced_by": "x", "step": {"action": "a", "target": "t", "retries": 99}}',
            "step.retries",
        ),
    ],
)
def test_bad_bytes_give_a_clear_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(raw)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["", "00-abc-def-01", "00-" + "g" * 32 + "-" + "0" * 16 + "-01", "00-" + "0" * 32 + "-" + "0" * 15 + "-01"],
)
def test_malformed_traceparent_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        ev.TraceContext(traceparent=value)


def test_naive_timestamps_are_refused() -> None:
    doc = json.loads(encode_event(SAMPLES[0]))
    doc["occurred_at"] = "2026-11-21T04:17:08"
    with pytest.raises(EventDecodeError, match="timezone"):
        decode_event(json.dumps(doc).encode())


def test_follow_keeps_incident_correlation_and_trace() -> None:
    alert = SAMPLES[0]
    opened = alert.follow(
        ev.IncidentOpened, produced_by="monitoring", incident_id="inc-9", fingerprint="f", title="t",
        service="checkout", severity="critical",
    )  # fmt: skip
    assert opened.causation_id == alert.event_id
    assert opened.correlation_id == alert.correlation_id
    assert opened.trace.trace_id == alert.trace.trace_id
    assert opened.trace.traceparent != alert.trace.traceparent
    closed = opened.follow(
        ev.IncidentClosed, produced_by="coordination", outcome="remediated", title="t", service="checkout"
    )
    assert closed.incident_id == "inc-9"


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_every_event_has_a_route_and_a_key(event: ev.Event) -> None:
    route = route_for(event)
    assert route.topic in ALL_TOPICS
    assert route.topic is not DLQ
    assert route.key(event)


def test_incident_events_are_keyed_by_incident_so_they_stay_ordered() -> None:
    keys = {route_for(e).key(e) for e in SAMPLES if e.incident_id == "inc-1"}
    assert keys == {"inc-1"}


def test_registry_names_are_versioned_and_unique() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(n.startswith("opswarm.") and n.endswith(".v1") for n in names)
    assert set(ROUTES) == set(ev.ALL_EVENT_TYPES)


def test_json_schema_lists_every_event_type() -> None:
    schema = json.dumps(event_json_schema())
    for event_cls in ev.ALL_EVENT_TYPES:
        assert ev.event_type_name(event_cls) in schema
