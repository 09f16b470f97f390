"""The scheduler's keys on the real Redis.

Each test gets its own key prefix (tests/integration/conftest.py).
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from scheduler.circuit_breakers import CircuitBreakers
from scheduler.clock import ManualClock
from scheduler.heartbeats import HeartbeatRegistry
from scheduler.idempotency import IdempotencyStore
from scheduler.leases import ResourceLeases
from scheduler.rate_limits import SlidingWindowLimiter
from scheduler.timers import DurableTimers
from tests.integration.redis_keys import keys_under, redis_for

pytestmark = pytest.mark.integration


async def test_every_key_is_under_the_prefix_and_its_area(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    await HeartbeatRegistry(redis_client, key_prefix, clock=clock).beat("monitoring", "m-1", 10, 1.0, "ok")
    await DurableTimers(redis_client, key_prefix, clock).schedule("t-1", clock.now(), {})
    await ResourceLeases(redis_client, key_prefix).acquire("svc-a", "exec-1", 60)
    await SlidingWindowLimiter(redis_client, key_prefix, clock).try_acquire("restart:svc-a", 3, 3600, "a-1")
    await CircuitBreakers(redis_client, key_prefix, clock).record_failure("svc-a")
    await IdempotencyStore(redis_client, key_prefix, clock=clock).claim("action-1", "exec-1")

    keys = await keys_under(redis_client, key_prefix)

    areas = {key.removeprefix(f"{key_prefix}:").split(":")[0] for key in keys}
    assert areas == {"heartbeats", "timers", "leases", "ratelimits", "breakers", "idempotency"}
    assert f"{key_prefix}:leases:svc-a" in keys
    assert f"{key_prefix}:heartbeats:instance:monitoring:m-1" in keys


async def test_a_client_decoding_responses_reads_the_same_values(
    services, key_prefix: str, clock: ManualClock  # noqa: ANN001
) -> None:
    client = redis_for(services, decode_responses=True)
    try:
        registry = HeartbeatRegistry(client, key_prefix, clock=clock)
        await registry.beat("execution", "e-1", 42, 5.5, "busy", {"action": "restart"})
        timers = DurableTimers(client, key_prefix, clock)
        await timers.schedule("t-1", clock.now(), {"incident": "inc-1"})
        store = IdempotencyStore(client, key_prefix, clock=clock)
        await store.claim("k", "e-1")
        await store.finish("k", {"ok": True})

        [record] = await registry.live()
        [timer] = await timers.claim_due("e-1", 10, 30)
        claim = await store.claim("k", "e-2")
        lease = await ResourceLeases(client, key_prefix).acquire("svc", "e-1", 60)
    finally:
        await client.aclose()

    assert (record.pid, record.started_at, record.details) == (42, 5.5, {"action": "restart"})
    assert (timer.timer_id, timer.payload, timer.attempts) == ("t-1", {"incident": "inc-1"}, 1)
    assert (claim.first, claim.state, claim.result, claim.owner) == (False, "done", {"ok": True}, "e-1")
    assert (lease.acquired, lease.holder) == (True, "e-1")
