"""Supervision of agent processes, heartbeats, durable timers, leases and rate limits (Redis).

Every class takes a `redis.asyncio.Redis` client, a key prefix (`opswarm` unless a test picks its own) and,
where time matters, a `Clock`; every Redis call runs under a timeout; check-and-set steps are Lua scripts or
MULTI/EXEC transactions. Keys are `<prefix>:<area>:...`.

- `heartbeats.HeartbeatRegistry`: which agent instances are alive (`opswarm agents status`).
- `timers.DurableTimers`: timers that survive a crash; claimed under a lease, completed exactly once.
- `leases.ResourceLeases`: one holder per resource at a time (one active action per service).
- `rate_limits.SlidingWindowLimiter`: at most N acquisitions per key in a sliding window.
- `circuit_breakers.CircuitBreakers`: automation stops for a key after N consecutive failures, until reset.
- `idempotency.IdempotencyStore`: an action runs once per idempotency key, across crashes.
- `clock`: the `Clock` protocol, the wall clock and a manual clock; `redis_area`: key naming and bounded calls.
"""
