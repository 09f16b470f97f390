"""Sliding-window rate limits: at most `limit` acquisitions of a key within any `window_s` seconds.

Each key is a sorted set of the tokens admitted, scored by when (by the clock passed in). Counting, trimming
and admitting happen in one Lua script, so concurrent callers never exceed the limit. A token id already
admitted in the window is admitted again without counting twice (a redelivered event asks twice).
Keys: `<prefix>:ratelimits:<key>`.
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
    milliseconds,
)

log = logging.getLogger(__name__)

AREA = "ratelimits"

# ARGV: now, window start (exclusive), limit, token, key expiry ms.
# Reply: {allowed 0|1, count, score of the entry whose leaving frees a slot (when refused)}.
_TRY_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return {1, count, false} end
local limit = tonumber(ARGV[3])
if count < limit then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {1, count + 1, false}
end
local freeing = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {0, count, freeing[2]}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    # Acquisitions in the window, this one included when allowed.
    count: int
    limit: int
    # When refused: seconds until a retry can be admitted; 0.0 when allowed.
    retry_after_s: float


def retry_after_s(freeing_entry_at: float, window_s: float, now: float) -> float:
    """Seconds until the entry admitted at `freeing_entry_at` leaves the window (an entry counts while
    now - window_s < its time)."""
    return max(0.0, freeing_entry_at + window_s - now)


class SlidingWindowLimiter:
    """Admit or refuse acquisitions per key against a limit in a sliding window."""

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
        self._try_acquire = self._area.script(_TRY_ACQUIRE)

    async def try_acquire(self, key: str, limit: int, window_s: float, token_id: str) -> RateDecision:
        """Admit `token_id` if fewer than `limit` were admitted in the last `window_s` seconds."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        if not token_id:
            raise ValueError("token_id must not be empty")
        now = self._clock.now()
        args = [now, now - window_s, limit, token_id, milliseconds(window_s)]
        reply = await self._area.run("ratelimits.try_acquire", self._try_acquire(keys=[self._area.key(key)], args=args))
        allowed, count, freeing_at = reply
        if as_int(allowed):
            return RateDecision(allowed=True, count=as_int(count), limit=limit, retry_after_s=0.0)
        wait_s = retry_after_s(as_float(freeing_at) or now, window_s, now)
        log.info(
            "rate limit refused", extra={"key": key, "limit": limit, "window_s": window_s, "retry_after_s": wait_s}
        )
        return RateDecision(allowed=False, count=as_int(count), limit=limit, retry_after_s=wait_s)

    async def peek(self, key: str, window_s: float) -> int:
        """How many acquisitions of `key` are in the window that ends now."""
        now = self._clock.now()
        count = await self._area.run(
            "ratelimits.peek", self._area.redis.zcount(self._area.key(key), f"({now - window_s!r}", "+inf")
        )
        return int(count)
