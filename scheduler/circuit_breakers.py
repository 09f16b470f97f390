"""Circuit breakers per key (a service, say): after N consecutive failed actions, automation stops for it.

A breaker is a hash of consecutive failures, whether it is open, and since when. It opens when the failures
reach the threshold and stays open until a human calls `reset` (a success while open changes nothing: the
breaker is there to stop automation until someone has looked). A success while closed clears the failures.
A closed breaker without failures has no key. Keys: `<prefix>:breakers:<key>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from scheduler.clock import Clock, WallClock
from scheduler.redis_area import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_PREFIX,
    RedisArea,
    as_float,
    as_int,
    fields_of,
)

log = logging.getLogger(__name__)

AREA = "breakers"
DEFAULT_FAILURE_THRESHOLD = 3

# ARGV: now, threshold. Reply: {1 if this failure opened the breaker else 0, the hash as a flat list}.
_RECORD_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local opened_now = 0
if redis.call('HGET', KEYS[1], 'open') ~= '1' and failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'open', '1', 'opened_at', ARGV[1])
  opened_now = 1
end
return {opened_now, redis.call('HGETALL', KEYS[1])}
"""

_RECORD_SUCCESS = """
if redis.call('HGET', KEYS[1], 'open') == '1' then return redis.call('HGETALL', KEYS[1]) end
redis.call('DEL', KEYS[1])
return {}
"""


@dataclass(frozen=True, slots=True)
class BreakerState:
    open: bool
    consecutive_failures: int
    opened_at: float | None


def breaker_from_fields(fields: dict[str, str]) -> BreakerState:
    """A stored breaker hash as a state; no fields means closed without failures."""
    is_open = fields.get("open") == "1"
    return BreakerState(
        open=is_open,
        consecutive_failures=as_int(fields.get("failures")),
        opened_at=as_float(fields.get("opened_at")) if is_open else None,
    )


class CircuitBreakers:
    """Record outcomes per key and tell whether automation may act on it."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        if failure_threshold <= 0:
            raise ValueError("failure_threshold must be positive")
        self._threshold = failure_threshold
        self._clock = clock or WallClock()
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._record_failure = self._area.script(_RECORD_FAILURE)
        self._record_success = self._area.script(_RECORD_SUCCESS)

    async def record_failure(self, key: str) -> BreakerState:
        """Count one more consecutive failure; opens the breaker when the count reaches the threshold."""
        opened_now, row = await self._area.run(
            "breakers.record_failure",
            self._record_failure(keys=[self._area.key(key)], args=[self._clock.now(), self._threshold]),
        )
        state = breaker_from_fields(fields_of(row))
        if as_int(opened_now):
            log.warning(
                "circuit breaker opened",
                extra={"key": key, "consecutive_failures": state.consecutive_failures, "threshold": self._threshold},
            )
        return state

    async def record_success(self, key: str) -> BreakerState:
        """Clear the consecutive failures of a closed breaker; an open one stays open until `reset`."""
        row = await self._area.run("breakers.record_success", self._record_success(keys=[self._area.key(key)]))
        return breaker_from_fields(fields_of(row))

    async def state(self, key: str) -> BreakerState:
        row = await self._area.run("breakers.state", self._area.redis.hgetall(self._area.key(key)))
        return breaker_from_fields(fields_of(row))

    async def reset(self, key: str) -> BreakerState:
        """Close the breaker and forget its failures: a human re-enables automation for `key`."""
        await self._area.run("breakers.reset", self._area.redis.delete(self._area.key(key)))
        log.info("circuit breaker reset", extra={"key": key})
        return BreakerState(open=False, consecutive_failures=0, opened_at=None)
