"""DurableTimers on the real Redis: idempotent scheduling, due order, exclusive claims, reclaiming, completion."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from scheduler.clock import ManualClock
from scheduler.timers import DurableTimers, Timer
from tests.integration.redis_keys import redis_for

pytestmark = pytest.mark.integration


@pytest.fixture
def timers(redis_client: Redis, key_prefix: str, clock: ManualClock) -> DurableTimers:
    return DurableTimers(redis_client, key_prefix, clock)


def ids(claimed: list[Timer]) -> list[str]:
    return [timer.timer_id for timer in claimed]


async def test_scheduling_the_same_id_twice_keeps_the_first_timer(timers: DurableTimers, clock: ManualClock) -> None:
    assert await timers.schedule("escalate:inc-1", clock.now() + 60, {"incident": "inc-1"}) is True
    assert await timers.schedule("escalate:inc-1", clock.now() + 5, {"incident": "other"}) is False
    clock.advance(10)
    assert await timers.claim_due("w-1", 10, 30) == []
    clock.advance(50)

    [timer] = await timers.claim_due("w-1", 10, 30)

    assert (timer.timer_id, timer.payload, timer.due_at) == ("escalate:inc-1", {"incident": "inc-1"}, clock.now())
    assert await timers.pending() == 1


async def test_due_timers_are_claimed_earliest_first_up_to_the_limit(
    timers: DurableTimers, clock: ManualClock
) -> None:
    start = clock.now()
    for timer_id, delay in [("c", 3.0), ("a", 1.0), ("later", 100.0), ("b", 2.0)]:
        await timers.schedule(timer_id, start + delay, {"id": timer_id})
    clock.advance(10)

    assert ids(await timers.claim_due("w-1", 2, 30)) == ["a", "b"]
    assert ids(await timers.claim_due("w-1", 2, 30)) == ["c"]
    assert await timers.claim_due("w-1", 2, 30) == []


async def test_concurrent_claimers_get_disjoint_timers(
    redis_client: Redis, key_prefix: str, clock: ManualClock, services  # noqa: ANN001
) -> None:
    timers = DurableTimers(redis_client, key_prefix, clock)
    everything = {f"t-{n:03d}" for n in range(60)}
    for timer_id in everything:
        await timers.schedule(timer_id, clock.now(), {})
    clock.advance(1)
    workers = [f"w-{n}" for n in range(4)]
    clients = [redis_for(services) for _ in workers]

    async def drain(worker: str, client: Redis) -> list[str]:
        mine: list[str] = []
        own_timers = DurableTimers(client, key_prefix, clock)
        while claimed := await own_timers.claim_due(worker, 3, 30):
            mine.extend(ids(claimed))
        return mine

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(drain(worker, client)) for worker, client in zip(workers, clients, strict=True)]
    finally:
        for client in clients:
            await client.aclose()

    claimed = [task.result() for task in tasks]
    assert sum(len(mine) for mine in claimed) == len(everything)
    assert set().union(*claimed) == everything


async def test_a_claim_whose_lease_ran_out_is_handed_out_again(timers: DurableTimers, clock: ManualClock) -> None:
    await timers.schedule("verify:act-1", clock.now(), {"action": "act-1"})
    [first] = await timers.claim_due("w-dead", 10, 30)
    clock.advance(29)
    assert await timers.claim_due("w-2", 10, 30) == []
    clock.advance(1)

    [again] = await timers.claim_due("w-2", 10, 30)

    assert (first.owner, first.attempts) == ("w-dead", 1)
    assert (again.timer_id, again.owner, again.attempts) == ("verify:act-1", "w-2", 2)
    assert again.payload == {"action": "act-1"}
    assert again.lease_until == clock.now() + 30
    assert await timers.complete("verify:act-1", owner="w-dead") is False
    assert await timers.complete("verify:act-1", owner="w-2") is True


async def test_a_completed_timer_is_gone(timers: DurableTimers, clock: ManualClock) -> None:
    await timers.schedule("t-1", clock.now(), {})
    await timers.claim_due("w-1", 10, 30)

    assert await timers.complete("t-1") is True

    clock.advance(3600)
    assert await timers.claim_due("w-2", 10, 30) == []
    assert await timers.complete("t-1") is False
    assert await timers.pending() == 0
    assert await timers.schedule("t-1", clock.now(), {}) is True


async def test_only_a_claimed_timer_completes(timers: DurableTimers, clock: ManualClock) -> None:
    await timers.schedule("t-1", clock.now() + 60, {})

    assert await timers.complete("t-1") is False
    assert await timers.pending() == 1


@pytest.mark.parametrize("claimed_first", [False, True])
async def test_cancel_removes_a_waiting_or_claimed_timer(
    timers: DurableTimers, clock: ManualClock, claimed_first: bool
) -> None:
    await timers.schedule("t-1", clock.now(), {})
    if claimed_first:
        await timers.claim_due("w-1", 10, 30)

    assert await timers.cancel("t-1") is True
    assert await timers.cancel("t-1") is False
    clock.advance(3600)
    assert await timers.claim_due("w-2", 10, 30) == []
    assert await timers.pending() == 0


async def test_a_timer_outlives_the_process_that_scheduled_it(
    key_prefix: str, clock: ManualClock, services  # noqa: ANN001
) -> None:
    before_crash = redis_for(services)
    await DurableTimers(before_crash, key_prefix, clock).schedule("t-1", clock.now() + 5, {"n": 1})
    await before_crash.aclose()
    clock.advance(5)

    after_restart = redis_for(services)
    try:
        claimed = await DurableTimers(after_restart, key_prefix, clock).claim_due("w-new", 10, 30)
    finally:
        await after_restart.aclose()

    assert [(t.timer_id, t.payload) for t in claimed] == [("t-1", {"n": 1})]
