"""The dead-letter format keeps the original bytes and says why and where from."""

from datetime import UTC, datetime

import pytest

from bus.consumer import RetryPolicy
from bus.dead_letters import DeadLetter


def test_dead_letter_headers_round_trip() -> None:
    letter = DeadLetter(
        reason="invalid event: produced_by: Field required",
        error_type="decode",
        source_topic="opswarm.alerts.v1",
        source_partition=2,
        source_offset=41,
        consumer_group="monitoring",
        attempts=1,
        failed_at=datetime(2026, 11, 21, 4, 0, tzinfo=UTC),
        key=b"checkout",
        value=b"\x00\xffnot json",
        original_headers=(("traceparent", b"00-x"),),
    )
    back = DeadLetter.from_record(letter.key, letter.value, letter.headers())
    assert back == letter


def test_a_record_without_dead_letter_headers_is_refused() -> None:
    with pytest.raises(ValueError, match="not an opswarm dead letter"):
        DeadLetter.from_record(b"k", b"v", [("traceparent", b"x")])


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0), (30, 5.0)]
)
def test_backoff_grows_and_is_bounded(attempt: int, expected: float) -> None:
    assert RetryPolicy().backoff(attempt) == pytest.approx(expected)
