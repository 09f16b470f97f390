"""ResourceLeases on the real Redis: one holder at a time, only the holder releases, leases expire."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from scheduler.leases import LeaseResult, ResourceLeases
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def leases(redis_client: Redis, key_prefix: str) -> ResourceLeases:
    return ResourceLeases(redis_client, key_prefix)


async def test_a_leased_resource_is_refused_to_others(leases: ResourceLeases) -> None:
    taken = await leases.acquire("svc-a", "exec-1", 60)
    refused = await leases.acquire("svc-a", "exec-2", 60)

    assert (taken.acquired, taken.holder) == (True, "exec-1")
    assert taken.expires_at == pytest.approx(time.time() + 60, abs=5)
    assert refused == LeaseResult(acquired=False, holder="exec-1", expires_at=taken.expires_at)
    assert await leases.holder("svc-a") == "exec-1"


async def test_resources_are_leased_independently(leases: ResourceLeases) -> None:
    assert (await leases.acquire("svc-a", "exec-1", 60)).acquired
    assert (await leases.acquire("svc-b", "exec-2", 60)).acquired


async def test_of_concurrent_acquirers_exactly_one_gets_the_lease(leases: ResourceLeases) -> None:
    holders = [f"exec-{n}" for n in range(10)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(leases.acquire("svc-a", holder, 60)) for holder in holders]

    winners = [task.result().holder for task in tasks if task.result().acquired]
    assert len(winners) == 1
    assert {task.result().holder for task in tasks} == set(winners)


async def test_the_holder_acquiring_again_extends_its_lease(leases: ResourceLeases) -> None:
    short = await leases.acquire("svc-a", "exec-1", 10)
    extended = await leases.acquire("svc-a", "exec-1", 600)

    assert extended.acquired
    assert extended.expires_at is not None and short.expires_at is not None
    assert extended.expires_at - short.expires_at == pytest.approx(590, abs=5)


async def test_only_the_holder_releases(leases: ResourceLeases) -> None:
    await leases.acquire("svc-a", "exec-1", 60)

    assert await leases.release("svc-a", "exec-2") is False
    assert await leases.holder("svc-a") == "exec-1"
    assert await leases.release("svc-a", "exec-1") is True
    assert await leases.holder("svc-a") is None
    assert await leases.release("svc-a", "exec-1") is False
    assert (await leases.acquire("svc-a", "exec-2", 60)).acquired


async def test_a_lease_ends_when_its_ttl_runs_out(leases: ResourceLeases) -> None:
    await leases.acquire("svc-a", "exec-dead", 0.2)

    async def freed() -> bool:
        return await leases.holder("svc-a") is None

    await eventually(freed)
    assert await leases.acquire("svc-a", "exec-2", 60) == LeaseResult(
        acquired=True, holder="exec-2", expires_at=pytest.approx(time.time() + 60, abs=5)
    )
