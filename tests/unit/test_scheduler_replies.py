"""How the scheduler classes read what Redis stores and returns, and what they refuse up front (no Redis)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from scheduler.circuit_breakers import BreakerState, CircuitBreakers, breaker_from_fields
from scheduler.heartbeats import HeartbeatRegistry, heartbeat_fields, record_from_fields
from scheduler.idempotency import ClaimResult, IdempotencyStore, claim_from_reply
from scheduler.leases import LeaseResult, lease_from_reply
from scheduler.rate_limits import retry_after_s
from scheduler.timers import DurableTimers, Timer, timer_from_claim


@pytest.mark.parametrize(("now", "age_s"), [(1_000.0, 0.0), (1_012.5, 12.5), (990.0, 0.0)])
def test_a_stored_heartbeat_reads_back_with_its_age(now: float, age_s: float) -> None:
    fields = heartbeat_fields("execution", "e-1", 42, 900.25, 1_000.0, "running", {"queue": [1, 2]})

    record = record_from_fields(fields, now)

    assert (record.agent, record.instance_id, record.pid, record.status) == ("execution", "e-1", 42, "running")
    assert (record.started_at, record.last_beat_at, record.details) == (900.25, 1_000.0, {"queue": [1, 2]})
    assert record.age_s == age_s


async def test_an_agent_name_with_a_colon_is_refused() -> None:
    with pytest.raises(ValueError):
        await HeartbeatRegistry(Redis(), "p").beat("a:b", "i-1", 1, 0.0, "running")


@pytest.mark.parametrize(
    ("row", "timer"),
    [
        (
            [b"t-1", b"1700000000.5", b'{"incident":"inc-1"}', 1],
            Timer("t-1", 1_700_000_000.5, {"incident": "inc-1"}, "w-1", 1_700_000_030.0, 1),
        ),
        (["t-2", "5", "", 3], Timer("t-2", 5.0, {}, "w-1", 1_700_000_030.0, 3)),
    ],
)
def test_a_claimed_timer_reads_back(row: list, timer: Timer) -> None:  # type: ignore[type-arg]
    assert timer_from_claim(row, "w-1", 1_700_000_030.0) == timer


@pytest.mark.parametrize(
    ("reply", "lease"),
    [
        ([1, b"exec-1", 1_700_000_060_250], LeaseResult(True, "exec-1", 1_700_000_060.25)),
        ([0, b"exec-2", 1_700_000_001_000], LeaseResult(False, "exec-2", 1_700_000_001.0)),
        ([0, None, -1], LeaseResult(False, None, None)),
    ],
)
def test_a_lease_reply_reads_back(reply: list, lease: LeaseResult) -> None:  # type: ignore[type-arg]
    assert lease_from_reply(reply) == lease


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, BreakerState(False, 0, None)),
        ({"failures": "2"}, BreakerState(False, 2, None)),
        ({"failures": "3", "open": "1", "opened_at": "1700000000.5"}, BreakerState(True, 3, 1_700_000_000.5)),
    ],
)
def test_a_breaker_hash_reads_back(fields: dict[str, str], state: BreakerState) -> None:
    assert breaker_from_fields(fields) == state


@pytest.mark.parametrize(
    ("first", "fields", "claim"),
    [
        (1, {"state": "in_progress", "owner": "e-1"}, ClaimResult(True, "in_progress", None, "e-1")),
        (
            b"0",
            {"state": "done", "owner": "e-1", "result": '{"ok":true}'},
            ClaimResult(False, "done", {"ok": True}, "e-1"),
        ),
    ],
)
def test_a_claim_reply_reads_back(first: int | bytes, fields: dict[str, str], claim: ClaimResult) -> None:
    assert claim_from_reply(first, fields) == claim


@pytest.mark.parametrize(
    ("freeing_at", "window_s", "now", "wait_s"),
    [(0.0, 3600.0, 1800.0, 1800.0), (0.0, 3600.0, 3600.0, 0.0), (100.0, 60.0, 100.0, 60.0), (0.0, 10.0, 50.0, 0.0)],
)
def test_retry_after_is_when_the_freeing_entry_leaves_the_window(
    freeing_at: float, window_s: float, now: float, wait_s: float
) -> None:
    assert retry_after_s(freeing_at, window_s, now) == wait_s


def test_a_breaker_needs_a_positive_threshold() -> None:
    with pytest.raises(ValueError):
        CircuitBreakers(Redis(), failure_threshold=0)


@pytest.mark.parametrize(("limit", "lease_s", "owner"), [(0, 30.0, "w-1"), (1, 0.0, "w-1"), (1, 30.0, "")])
async def test_a_claim_needs_a_limit_a_lease_and_an_owner(limit: int, lease_s: float, owner: str) -> None:
    with pytest.raises(ValueError):
        await DurableTimers(Redis()).claim_due(owner, limit, lease_s)


def test_a_record_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError):
        IdempotencyStore(Redis(), ttl_s=0)
