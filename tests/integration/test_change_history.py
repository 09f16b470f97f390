"""The change history on a real Redis: idempotent by event id, newest first, bounded in number, age and time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from bus.events import ChangeRecorded
from scheduler.change_history import ChangeHistory
from scheduler.clock import ManualClock
from tests.integration.redis_keys import keys_under

pytestmark = pytest.mark.integration


def change(clock: ManualClock, seconds_ago: float, version: str, service: str = "checkout") -> ChangeRecorded:
    return ChangeRecorded(
        produced_by="tests", service=service, kind="deploy", version=version, previous_version=f"before-{version}",
        occurred_at=datetime.fromtimestamp(clock.now() - seconds_ago, UTC),
    )  # fmt: skip


async def test_recent_changes_come_newest_first_within_the_lookback(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    history = ChangeHistory(redis_client, key_prefix, clock=clock)
    for recorded in [change(clock, 600, "v2"), change(clock, 7200, "v1"), change(clock, 60, "v3"),
                     change(clock, 30, "other", service="cart")]:  # fmt: skip
        assert await history.record(recorded)

    recent = await history.recent("checkout", 3600)

    assert [c.version for c in recent] == ["v3", "v2"]
    assert [c.version for c in await history.recent("checkout", 10_000)] == ["v3", "v2", "v1"]
    assert [c.version for c in await history.recent("checkout", 10_000, limit=1)] == ["v3"]
    assert [c.version for c in await history.recent("cart", 3600)] == ["other"]
    assert await history.recent("nobody", 3600) == []


async def test_a_redelivered_change_is_recorded_once(redis_client: Redis, key_prefix: str, clock: ManualClock) -> None:
    history = ChangeHistory(redis_client, key_prefix, clock=clock)
    deploy = change(clock, 10, "v7")

    assert await history.record(deploy) is True
    assert await history.record(ChangeRecorded.model_validate_json(deploy.model_dump_json())) is False

    assert await history.recent("checkout", 3600) == [deploy]


async def test_the_history_is_bounded_in_number_and_age_and_expires(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    history = ChangeHistory(redis_client, key_prefix, max_per_service=3, keep_s=1000, clock=clock)
    for i in range(5):
        await history.record(change(clock, 500 - i, f"v{i}"))
    assert [c.version for c in await history.recent("checkout", 10_000)] == ["v4", "v3", "v2"]

    clock.advance(700)  # v2..v4 are now about 1200 s old: past keep_s, they go with the next record
    await history.record(change(clock, 0, "v5"))

    assert [c.version for c in await history.recent("checkout", 10_000)] == ["v5"]
    keys = await keys_under(redis_client, key_prefix)
    assert keys == [f"{key_prefix}:changes:events:checkout", f"{key_prefix}:changes:service:checkout"]
    assert await redis_client.hlen(f"{key_prefix}:changes:events:checkout") == 1
    for key in keys:
        assert 0 < await redis_client.pttl(key) <= 1_000_000


async def test_a_change_without_a_service_is_refused(redis_client: Redis, key_prefix: str) -> None:
    history = ChangeHistory(redis_client, key_prefix)

    with pytest.raises(ValueError, match="names its service"):
        await history.record(ChangeRecorded(produced_by="tests", service="", kind="config"))
