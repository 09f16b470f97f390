"""JSON on the wire: events to bytes and back, with a clear reason when bytes are not a valid event."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from bus.errors import EventDecodeError
from bus.events import AnyEvent, Event, EventUnion

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(EventUnion)


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def decode_event(raw: bytes | None) -> AnyEvent:
    """Parse and validate one event; raises EventDecodeError saying what is wrong."""
    if raw is None:
        raise EventDecodeError("record has no value (tombstone)")
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise EventDecodeError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[:3]
    parts = []
    for err in first:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(first)
    suffix = f" (+{more} more)" if more > 0 else ""
    return "invalid event: " + "; ".join(parts) + suffix


def event_json_schema() -> dict:
    """The JSON schema of the event union (for docs and for consumers in other languages)."""
    return _ADAPTER.json_schema()
