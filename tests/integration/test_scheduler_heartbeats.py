"""HeartbeatRegistry on the real Redis: beats are listed while fresh and disappear when they go stale."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from scheduler.clock import ManualClock, WallClock
from scheduler.heartbeats import HeartbeatRegistry
from tests.integration.redis_keys import eventually, keys_under

pytestmark = pytest.mark.integration


async def test_a_beat_is_listed_with_its_age(redis_client: Redis, key_prefix: str, clock: ManualClock) -> None:
    registry = HeartbeatRegistry(redis_client, key_prefix, ttl_s=30, clock=clock)
    beat_at = clock.now()
    await registry.beat("coordination", "c-1", 4242, 1_699_999_000.0, "running", {"incidents": 3})
    clock.advance(5)

    [record] = await registry.live()

    assert record.agent == "coordination"
    assert record.instance_id == "c-1"
    assert record.pid == 4242
    assert record.started_at == 1_699_999_000.0
    assert record.last_beat_at == beat_at
    assert record.status == "running"
    assert record.details == {"incidents": 3}
    assert record.age_s == pytest.approx(5.0)


async def test_beating_again_replaces_the_previous_beat(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    registry = HeartbeatRegistry(redis_client, key_prefix, ttl_s=30, clock=clock)
    await registry.beat("execution", "e-1", 1, 0.0, "starting", {"queue": 5})
    clock.advance(10)
    await registry.beat("execution", "e-1", 1, 0.0, "running")

    [record] = await registry.live()

    assert (record.status, record.details, record.age_s) == ("running", {}, 0.0)


async def test_instances_are_listed_by_agent_then_instance(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    registry = HeartbeatRegistry(redis_client, key_prefix, ttl_s=30, clock=clock)
    for agent, instance in [("monitoring", "m-2"), ("diagnosis", "d-1"), ("monitoring", "m-1")]:
        await registry.beat(agent, instance, 1, 0.0, "running")

    records = await registry.live()

    assert [(r.agent, r.instance_id) for r in records] == [
        ("diagnosis", "d-1"),
        ("monitoring", "m-1"),
        ("monitoring", "m-2"),
    ]


async def test_a_beat_older_than_the_ttl_is_not_live(redis_client: Redis, key_prefix: str, clock: ManualClock) -> None:
    registry = HeartbeatRegistry(redis_client, key_prefix, ttl_s=30, clock=clock)
    await registry.beat("knowledge", "k-1", 1, 0.0, "running")
    clock.advance(20)
    await registry.beat("diagnosis", "d-1", 1, 0.0, "running")
    clock.advance(11)

    records = await registry.live()

    assert registry.stale_after_s == 30
    assert [r.agent for r in records] == ["diagnosis"]


async def test_a_heartbeat_expires_in_redis_and_leaves_the_index(redis_client: Redis, key_prefix: str) -> None:
    registry = HeartbeatRegistry(redis_client, key_prefix, ttl_s=0.2, clock=WallClock())
    await registry.beat("monitoring", "m-1", 1, 0.0, "running")
    assert [r.instance_id for r in await registry.live()] == ["m-1"]

    async def expired_and_unindexed() -> bool:
        return await registry.live() == [] and await keys_under(redis_client, key_prefix) == []

    await eventually(expired_and_unindexed)


async def test_forget_removes_an_instance_at_once(redis_client: Redis, key_prefix: str, clock: ManualClock) -> None:
    registry = HeartbeatRegistry(redis_client, key_prefix, ttl_s=30, clock=clock)
    await registry.beat("monitoring", "m-1", 1, 0.0, "running")
    await registry.beat("monitoring", "m-2", 2, 0.0, "running")

    assert await registry.forget("monitoring", "m-1") is True
    assert await registry.forget("monitoring", "m-1") is False
    assert [r.instance_id for r in await registry.live()] == ["m-2"]
