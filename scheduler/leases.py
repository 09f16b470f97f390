"""Leases on resources: at most one holder per resource at a time (one active action per service, say).

A lease is a key holding the holder's id with a Redis expiry (SET NX PX), so a holder that dies frees the
resource when its lease runs out. Expiry is by the Redis server's clock. Keys: `<prefix>:leases:<resource>`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from scheduler.redis_area import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_PREFIX,
    RawValue,
    RedisArea,
    as_int,
    as_text,
    milliseconds,
)

log = logging.getLogger(__name__)

AREA = "leases"

# ARGV: holder, ttl ms. Reply: {acquired 0|1, holder or false, expires at (server ms) or -1}.
# PEXPIRETIME (Redis >= 7.0) is the key's own absolute expiry, so every caller is told the same instant.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, ARGV[1], redis.call('PEXPIRETIME', KEYS[1])}
end
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current, redis.call('PEXPIRETIME', KEYS[1])}
end
return {0, current, redis.call('PEXPIRETIME', KEYS[1])}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class LeaseResult:
    acquired: bool
    # Who holds the lease now: the caller when acquired, otherwise the other holder (None if it just ended).
    holder: str | None
    # Unix seconds, by the Redis server's clock; None when unknown.
    expires_at: float | None


def lease_from_reply(reply: Sequence[RawValue]) -> LeaseResult:
    acquired, holder, expires_at_ms = reply
    expires = as_int(expires_at_ms, default=-1)
    return LeaseResult(
        acquired=bool(as_int(acquired)),
        holder=as_text(holder) or None,
        expires_at=expires / 1000 if expires >= 0 else None,
    )


class ResourceLeases:
    """Acquire, extend and release leases on named resources."""

    def __init__(
        self, redis: Redis, prefix: str = DEFAULT_PREFIX, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    ) -> None:
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._acquire = self._area.script(_ACQUIRE)
        self._release = self._area.script(_RELEASE)

    async def acquire(self, resource: str, holder: str, ttl_s: float) -> LeaseResult:
        """Take the lease for `ttl_s`; the current holder calling again extends it to `ttl_s` from now."""
        if not holder:
            raise ValueError("holder must not be empty")
        reply = await self._area.run(
            "leases.acquire", self._acquire(keys=[self._area.key(resource)], args=[holder, milliseconds(ttl_s)])
        )
        result = lease_from_reply(reply)
        if not result.acquired:
            log.debug("lease held by another holder", extra={"resource": resource, "holder": result.holder})
        return result

    async def release(self, resource: str, holder: str) -> bool:
        """Give the lease back; False (and nothing changes) unless `holder` holds it."""
        released = await self._area.run("leases.release", self._release(keys=[self._area.key(resource)], args=[holder]))
        return bool(released)

    async def holder(self, resource: str) -> str | None:
        """Who holds the lease on `resource` now, if anyone."""
        return as_text(await self._area.run("leases.holder", self._area.redis.get(self._area.key(resource))))
