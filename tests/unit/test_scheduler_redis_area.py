"""The scheduler's key naming, bounded calls, stored-value readers and the manual clock (no Redis)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from scheduler.clock import ManualClock
from scheduler.redis_area import (
    RedisArea,
    as_float,
    as_int,
    as_text,
    dump_json,
    fields_of,
    load_json,
    milliseconds,
)


def area(call_timeout_s: float = 5.0) -> RedisArea:
    return RedisArea(Redis(), prefix="opswarm", area="leases", call_timeout_s=call_timeout_s)


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        ((), "opswarm:leases"),
        (("svc-a",), "opswarm:leases:svc-a"),
        (("instance", "monitoring", "host:1"), "opswarm:leases:instance:monitoring:host:1"),
    ],
)
def test_keys_are_prefix_area_and_parts(parts: tuple[str, ...], key: str) -> None:
    assert area().key(*parts) == key


@pytest.mark.parametrize(("prefix", "name", "timeout_s"), [("", "leases", 5.0), ("opswarm", "", 5.0), ("p", "a", 0)])
def test_an_area_needs_a_prefix_a_name_and_a_positive_timeout(prefix: str, name: str, timeout_s: float) -> None:
    with pytest.raises(ValueError):
        RedisArea(Redis(), prefix=prefix, area=name, call_timeout_s=timeout_s)


def test_an_empty_key_part_is_refused() -> None:
    with pytest.raises(ValueError):
        area().key("instance", "")


async def test_a_call_that_does_not_answer_times_out() -> None:
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        await area(call_timeout_s=0.01).run("test.wait", never.wait())


async def test_a_call_that_answers_returns_its_value() -> None:
    async def answer() -> str:
        return "ok"

    assert await area().run("test.answer", answer()) == "ok"


@pytest.mark.parametrize(
    ("raw", "text", "number"),
    [(b"1.5", "1.5", 1.5), ("2", "2", 2.0), (3, "3", 3.0), (None, None, None), (b"", "", None)],
)
def test_stored_values_read_as_text_and_numbers(
    raw: bytes | str | int | None, text: str | None, number: float | None
) -> None:
    assert as_text(raw) == text
    assert as_float(raw) == number


@pytest.mark.parametrize(("raw", "default", "number"), [(b"7", 0, 7), (None, 0, 0), (None, -1, -1), ("", 5, 5)])
def test_stored_integers_fall_back_to_the_default(raw: bytes | str | None, default: int, number: int) -> None:
    assert as_int(raw, default=default) == number


@pytest.mark.parametrize(
    "stored",
    [[b"a", b"1", b"b", b"2"], ["a", "1", "b", "2"], {b"a": b"1", b"b": b"2"}, {"a": "1", "b": "2"}],
)
def test_hash_replies_read_the_same_whatever_their_form(stored: list | dict) -> None:  # type: ignore[type-arg]
    assert fields_of(stored) == {"a": "1", "b": "2"}


def test_json_is_stored_canonically_and_read_back() -> None:
    stored = dump_json({"b": [1, 2], "a": {"z": None}})

    assert stored == '{"a":{"z":null},"b":[1,2]}'
    assert load_json(stored.encode()) == {"a": {"z": None}, "b": [1, 2]}
    assert load_json(None) is None


def test_stored_json_must_be_an_object() -> None:
    with pytest.raises(ValueError):
        load_json("[1, 2]")


@pytest.mark.parametrize(("seconds", "ms"), [(0.2, 200), (0.0001, 1), (1.0005, 1001), (3600, 3_600_000)])
def test_durations_round_up_to_whole_milliseconds(seconds: float, ms: int) -> None:
    assert milliseconds(seconds) == ms


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
def test_a_duration_must_be_positive_and_finite(seconds: float) -> None:
    with pytest.raises(ValueError):
        milliseconds(seconds)


def test_a_manual_clock_moves_only_forward_when_told() -> None:
    clock = ManualClock(start=100.0)

    assert clock.advance(5) == 105.0
    clock.set(200.0)
    assert clock.now() == 200.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(199.0)
