"""CircuitBreakers on the real Redis: open after N consecutive failures, success resets, a human resets."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from scheduler.circuit_breakers import BreakerState, CircuitBreakers
from scheduler.clock import ManualClock

pytestmark = pytest.mark.integration

CLOSED = BreakerState(open=False, consecutive_failures=0, opened_at=None)


@pytest.fixture
def breakers(redis_client: Redis, key_prefix: str, clock: ManualClock) -> CircuitBreakers:
    return CircuitBreakers(redis_client, key_prefix, clock, failure_threshold=3)


@pytest.mark.parametrize("threshold", [1, 3, 5])
async def test_a_breaker_opens_at_the_threshold(
    redis_client: Redis, key_prefix: str, clock: ManualClock, threshold: int
) -> None:
    breakers = CircuitBreakers(redis_client, key_prefix, clock, failure_threshold=threshold)
    before = [await breakers.record_failure("svc-a") for _ in range(threshold - 1)]
    clock.advance(30)

    opened = await breakers.record_failure("svc-a")

    assert [(s.open, s.consecutive_failures) for s in before] == [(False, n) for n in range(1, threshold)]
    assert opened == BreakerState(open=True, consecutive_failures=threshold, opened_at=clock.now())
    assert await breakers.state("svc-a") == opened


async def test_a_success_clears_the_failures_of_a_closed_breaker(breakers: CircuitBreakers) -> None:
    await breakers.record_failure("svc-a")
    await breakers.record_failure("svc-a")

    assert await breakers.record_success("svc-a") == CLOSED
    assert (await breakers.record_failure("svc-a")).consecutive_failures == 1


async def test_an_open_breaker_stays_open_until_reset(breakers: CircuitBreakers, clock: ManualClock) -> None:
    for _ in range(3):
        await breakers.record_failure("svc-a")
    opened_at = clock.now()
    clock.advance(60)

    after_more = await breakers.record_failure("svc-a")
    after_success = await breakers.record_success("svc-a")

    assert after_more == BreakerState(open=True, consecutive_failures=4, opened_at=opened_at)
    assert after_success == after_more
    assert await breakers.reset("svc-a") == CLOSED
    assert await breakers.state("svc-a") == CLOSED
    assert (await breakers.record_failure("svc-a")).open is False


async def test_breakers_are_per_key_and_persist_across_instances(
    redis_client: Redis, key_prefix: str, clock: ManualClock, breakers: CircuitBreakers
) -> None:
    for _ in range(3):
        await breakers.record_failure("svc-a")

    restarted = CircuitBreakers(redis_client, key_prefix, clock, failure_threshold=3)

    assert (await restarted.state("svc-a")).open is True
    assert await restarted.state("svc-b") == CLOSED
