"""SlidingWindowLimiter on the real Redis, with a manual clock: limits, retry-after, the window sliding."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from scheduler.clock import ManualClock
from scheduler.rate_limits import RateDecision, SlidingWindowLimiter

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture
def limiter(redis_client: Redis, key_prefix: str, clock: ManualClock) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(redis_client, key_prefix, clock)


async def test_three_restarts_an_hour_refuses_the_fourth_until_the_first_leaves(
    limiter: SlidingWindowLimiter, clock: ManualClock
) -> None:
    first_at = clock.now()
    decisions = []
    for n in range(3):
        decisions.append(await limiter.try_acquire("restart:checkout", 3, HOUR, f"act-{n}"))
        clock.advance(600)

    refused_at = clock.now()
    refused = await limiter.try_acquire("restart:checkout", 3, HOUR, "act-3")

    assert [(d.allowed, d.count) for d in decisions] == [(True, 1), (True, 2), (True, 3)]
    assert refused == RateDecision(allowed=False, count=3, limit=3, retry_after_s=HOUR - 1800)
    assert await limiter.peek("restart:checkout", HOUR) == 3

    clock.set(first_at + HOUR - 0.001)
    assert not (await limiter.try_acquire("restart:checkout", 3, HOUR, "act-3")).allowed
    clock.set(refused_at + refused.retry_after_s)
    allowed = await limiter.try_acquire("restart:checkout", 3, HOUR, "act-3")
    assert (allowed.allowed, allowed.count, allowed.retry_after_s) == (True, 3, 0.0)


async def test_a_lower_limit_waits_for_enough_entries_to_leave(
    limiter: SlidingWindowLimiter, clock: ManualClock
) -> None:
    for n in range(5):
        await limiter.try_acquire("k", 5, HOUR, f"t-{n}")
        clock.advance(60)

    refused = await limiter.try_acquire("k", 2, HOUR, "t-new")

    # Five entries at 0, 60, .. 240 s; two may stay, so the entry at 180 s must leave: at 3780 s, now is 300 s.
    assert (refused.allowed, refused.count, refused.retry_after_s) == (False, 5, 3780 - 300)


async def test_the_same_token_counts_once(limiter: SlidingWindowLimiter) -> None:
    for _ in range(3):
        decision = await limiter.try_acquire("k", 2, HOUR, "redelivered")
        assert (decision.allowed, decision.count) == (True, 1)
    assert (await limiter.try_acquire("k", 2, HOUR, "other")).count == 2


async def test_keys_are_limited_independently(limiter: SlidingWindowLimiter) -> None:
    assert (await limiter.try_acquire("restart:a", 1, HOUR, "t-1")).allowed
    assert (await limiter.try_acquire("restart:b", 1, HOUR, "t-1")).allowed
    assert not (await limiter.try_acquire("restart:a", 1, HOUR, "t-2")).allowed


async def test_concurrent_acquirers_never_exceed_the_limit(limiter: SlidingWindowLimiter) -> None:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(limiter.try_acquire("k", 3, HOUR, f"t-{n}")) for n in range(12)]

    assert sum(task.result().allowed for task in tasks) == 3
    assert await limiter.peek("k", HOUR) == 3


async def test_peek_counts_only_the_window(limiter: SlidingWindowLimiter, clock: ManualClock) -> None:
    await limiter.try_acquire("k", 10, HOUR, "old")
    clock.advance(HOUR - 60)
    await limiter.try_acquire("k", 10, HOUR, "new")

    assert await limiter.peek("k", HOUR) == 2
    assert await limiter.peek("k", 120) == 1
    clock.advance(60)
    assert await limiter.peek("k", HOUR) == 1
    assert await limiter.peek("never-used", HOUR) == 0
