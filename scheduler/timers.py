"""Durable timers: scheduled in Redis, so they survive the crash or restart of the agent that set them.

A timer waits in a sorted set scored by its due time. `claim_due` moves due timers, atomically, into an
in-flight set scored by the claim's lease deadline, so two workers never hold the same timer. A worker that
dies leaves its claim behind; once the lease deadline passes (by the clock passed in, not Redis expiry) the
next `claim_due` hands the timer out again. `complete` removes it for good: delivery of a claim is
at-least-once, and a timer is done exactly once. Keys: `<prefix>:timers:{due,inflight,due_at,payload,owner,attempts}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from scheduler.clock import Clock, WallClock
from scheduler.redis_area import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_PREFIX,
    RawValue,
    RedisArea,
    as_float,
    as_int,
    as_text,
    dump_json,
    load_json,
)

log = logging.getLogger(__name__)

AREA = "timers"
_KEY_NAMES = ("due", "inflight", "due_at", "payload", "owner", "attempts")

# KEYS: due, inflight, due_at, payload, owner, attempts (the same order in every script).
_SCHEDULE = """
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
return 1
"""

# ARGV: now, limit, lease deadline, owner. Expired claims go back to `due` first, at their own due time.
_CLAIM_DUE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[3], id), id)
  redis.call('HDEL', KEYS[5], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('HSET', KEYS[5], id, ARGV[4])
  local attempts = redis.call('HINCRBY', KEYS[6], id, 1)
  out[#out + 1] = {id, redis.call('HGET', KEYS[3], id), redis.call('HGET', KEYS[4], id), attempts}
end
return out
"""

# ARGV: timer id, owner ('' for any). Only a claimed timer completes.
_COMPLETE = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 3, 6 do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1
"""

_CANCEL = """
local existed = redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return existed
"""


@dataclass(frozen=True, slots=True)
class Timer:
    timer_id: str
    due_at: float
    payload: dict[str, Any]
    owner: str
    lease_until: float
    # How many times this timer has been claimed; more than 1 means an earlier claimant's lease ran out.
    attempts: int


def timer_from_claim(row: Sequence[RawValue], owner: str, lease_until: float) -> Timer:
    """One row of the claim script's reply: [timer_id, due_at, payload JSON, attempts]."""
    timer_id, due_at, payload, attempts = row
    return Timer(
        timer_id=as_text(timer_id) or "",
        due_at=as_float(due_at) or 0.0,
        payload=load_json(payload) or {},
        owner=owner,
        lease_until=lease_until,
        attempts=as_int(attempts),
    )


class DurableTimers:
    """Schedule, claim, complete and cancel timers shared by every instance of an agent."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self._clock = clock or WallClock()
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._keys = [self._area.key(name) for name in _KEY_NAMES]
        self._schedule = self._area.script(_SCHEDULE)
        self._claim_due = self._area.script(_CLAIM_DUE)
        self._complete = self._area.script(_COMPLETE)
        self._cancel = self._area.script(_CANCEL)

    async def schedule(self, timer_id: str, due_at: float, payload: dict[str, Any]) -> bool:
        """Add a timer; False (and nothing changes) when a timer with this id is already scheduled or claimed."""
        if not timer_id:
            raise ValueError("timer_id must not be empty")
        created = await self._area.run(
            "timers.schedule", self._schedule(keys=self._keys, args=[timer_id, due_at, dump_json(payload)])
        )
        return bool(created)

    async def cancel(self, timer_id: str) -> bool:
        """Remove a timer whether waiting or claimed; False when there was none."""
        return bool(await self._area.run("timers.cancel", self._cancel(keys=self._keys, args=[timer_id])))

    async def claim_due(self, owner: str, limit: int, lease_s: float) -> list[Timer]:
        """Up to `limit` due timers, earliest first, leased to `owner` for `lease_s` seconds."""
        if limit <= 0 or lease_s <= 0:
            raise ValueError("limit and lease_s must be positive")
        if not owner:
            raise ValueError("owner must not be empty")
        now = self._clock.now()
        lease_until = now + lease_s
        rows = await self._area.run(
            "timers.claim_due", self._claim_due(keys=self._keys, args=[now, limit, lease_until, owner])
        )
        timers = [timer_from_claim(row, owner, lease_until) for row in rows]
        for timer in timers:
            if timer.attempts > 1:
                log.warning(
                    "timer claimed again after a lease ran out",
                    extra={"timer_id": timer.timer_id, "owner": owner, "attempts": timer.attempts},
                )
        return timers

    async def complete(self, timer_id: str, owner: str | None = None) -> bool:
        """Remove a claimed timer for good. With `owner`, only while that owner holds the claim.

        False when the timer is not claimed (never was, already completed or cancelled, or, with `owner`,
        claimed by someone else after this owner's lease ran out).
        """
        done = await self._area.run("timers.complete", self._complete(keys=self._keys, args=[timer_id, owner or ""]))
        return bool(done)

    async def pending(self) -> int:
        """How many timers exist, waiting or claimed."""
        return int(await self._area.run("timers.pending", self._area.redis.hlen(self._keys[3])))


async def fire_due(
    timers: DurableTimers, owner: str, fire: Callable[[Timer], Awaitable[None]], *, batch: int, lease_s: float,
    what: str,
) -> int:  # fmt: skip
    """Claim up to `batch` due timers for `owner` and `fire` them concurrently; how many were claimed (0 when
    Redis could not be asked: the next round tries again). `fire` must not raise: a timer it leaves uncompleted
    fires again once its lease runs out."""
    try:
        due = await timers.claim_due(owner, batch, lease_s)
    except (RedisError, TimeoutError, ConnectionError):
        log.warning("due timers not claimed", extra={"what": what, "owner": owner}, exc_info=True)
        return 0
    async with asyncio.TaskGroup() as group:
        for timer in due:
            group.create_task(fire(timer))
    return len(due)


async def poll_due(stop: asyncio.Event, every_s: float, round_: Callable[[], Awaitable[int]]) -> None:
    """Run `round_` (a `fire_due` round), then wait `every_s` or until `stop`, until `stop` is set."""
    while not stop.is_set():
        await round_()
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            continue
