"""IdempotencyStore on the real Redis: one first claimant, later claimants see the outcome, records expire."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from scheduler.clock import ManualClock
from scheduler.idempotency import ClaimResult, IdempotencyStore
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_client: Redis, key_prefix: str, clock: ManualClock) -> IdempotencyStore:
    return IdempotencyStore(redis_client, key_prefix, clock=clock)


async def test_of_concurrent_claims_exactly_one_is_first(store: IdempotencyStore) -> None:
    owners = [f"exec-{n}" for n in range(10)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(store.claim("action:act-1", owner)) for owner in owners]

    claims = [task.result() for task in tasks]
    [winner] = [claim for claim in claims if claim.first]
    assert winner.state == "in_progress"
    assert {claim.owner for claim in claims} == {winner.owner}
    assert all(claim.state == "in_progress" for claim in claims)


async def test_a_later_claim_sees_the_finished_result(store: IdempotencyStore) -> None:
    await store.claim("action:act-1", "exec-1")
    assert await store.finish("action:act-1", {"exit_code": 0, "output": "restarted"}) is True

    again = await store.claim("action:act-1", "exec-2")

    assert again == ClaimResult(
        first=False, state="done", result={"exit_code": 0, "output": "restarted"}, owner="exec-1"
    )


async def test_the_first_result_stays(store: IdempotencyStore) -> None:
    await store.claim("k", "exec-1")
    await store.finish("k", {"n": 1})

    assert await store.finish("k", {"n": 2}) is False
    assert (await store.claim("k", "exec-2")).result == {"n": 1}


async def test_only_the_claimant_finishes_when_named(store: IdempotencyStore) -> None:
    await store.claim("k", "exec-1")

    assert await store.finish("k", {"n": 1}, owner="exec-2") is False
    assert await store.finish("k", {"n": 1}, owner="exec-1") is True


async def test_an_abandoned_claim_can_be_claimed_again(store: IdempotencyStore) -> None:
    await store.claim("k", "exec-1")

    assert await store.abandon("k", "exec-2") is False
    assert await store.abandon("k", "exec-1") is True
    assert (await store.claim("k", "exec-2")).first is True
    await store.finish("k", {})
    assert await store.abandon("k", "exec-2") is False


async def test_a_record_is_kept_for_its_ttl(redis_client: Redis, key_prefix: str, clock: ManualClock) -> None:
    week = IdempotencyStore(redis_client, key_prefix, clock=clock)
    await week.claim("kept", "exec-1")
    ttl_ms = await redis_client.pttl(f"{key_prefix}:idempotency:kept")
    assert 7 * 24 * 3600 * 1000 - 60_000 < ttl_ms <= 7 * 24 * 3600 * 1000

    short = IdempotencyStore(redis_client, key_prefix, ttl_s=0.2, clock=clock)
    await short.claim("brief", "exec-1")

    async def claimable_again() -> bool:
        return (await short.claim("brief", "exec-2")).first

    await eventually(claimable_again)
