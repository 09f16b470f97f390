"""Recent changes per service (deploys, config changes...), remembered so diagnosis can ask "what changed?".

Each service has a sorted set of change event ids scored by when the change happened (its `occurred_at`) and
a hash from event id to the change's JSON. Recording is idempotent by event id (a redelivered ChangeRecorded
changes nothing) and bounded: at most `max_per_service` changes, none older than `keep_s`, and both keys
expire `keep_s` after the service's last recorded change.
Keys: `<prefix>:changes:service:<service>` (sorted set) and `<prefix>:changes:events:<service>` (hash).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from redis.asyncio import Redis

from bus.events import ChangeRecorded
from scheduler.clock import Clock, WallClock
from scheduler.redis_area import DEFAULT_CALL_TIMEOUT_S, DEFAULT_PREFIX, RedisArea, as_text, milliseconds

log = logging.getLogger(__name__)

AREA = "changes"
DEFAULT_MAX_PER_SERVICE = 100
DEFAULT_KEEP_S = 7 * 24 * 3600.0

# KEYS: the service's sorted set, its hash. ARGV: event id, when (score), change JSON, max kept, oldest score
# kept, ttl ms. Reply: 1 when the change is new, 0 when it was recorded already.
_RECORD = """
local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
if added == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])
local excess = redis.call('ZCARD', KEYS[1]) - #gone - tonumber(ARGV[4])
if excess > 0 then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[5], '+inf', 'LIMIT', 0, excess)
  for _, id in ipairs(oldest) do gone[#gone + 1] = id end
end
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return added
"""

# KEYS: the service's sorted set, its hash. ARGV: oldest score wanted, how many. Reply: change JSONs, newest first.
_RECENT = """
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""


class ChangeHistory:
    """Record the changes of services and read back a service's recent ones."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        max_per_service: int = DEFAULT_MAX_PER_SERVICE,
        keep_s: float = DEFAULT_KEEP_S,
        clock: Clock | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        if max_per_service < 1:
            raise ValueError("max_per_service must be at least 1")
        self._max = max_per_service
        self._keep_s = keep_s
        self._keep_ms = milliseconds(keep_s)
        self._clock = clock or WallClock()
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._record = self._area.script(_RECORD)
        self._recent = self._area.script(_RECENT)

    def _keys(self, service: str) -> list[str]:
        return [self._area.key("service", service), self._area.key("events", service)]

    async def record(self, change: ChangeRecorded) -> bool:
        """Remember `change`; False when it was recorded before (same event id). ValueError for an empty service."""
        if not change.service:
            raise ValueError("a change names its service")
        oldest_kept = self._clock.now() - self._keep_s
        args = [change.event_id, change.occurred_at.timestamp(), change.model_dump_json(), self._max, oldest_kept]
        added = await self._area.run(
            "changes.record", self._record(keys=self._keys(change.service), args=[*args, self._keep_ms])
        )
        if not added:
            log.info("change already recorded", extra={"service": change.service, "event_id": change.event_id})
        return bool(added)

    async def recent(self, service: str, within_s: float, *, limit: int = 20) -> list[ChangeRecorded]:
        """The service's changes of the last `within_s` seconds, newest first, at most `limit`."""
        if not service or within_s <= 0 or limit < 1:
            return []
        since = self._clock.now() - within_s
        rows = await self._area.run("changes.recent", self._recent(keys=self._keys(service), args=[since, limit]))
        changes = []
        for row in rows:
            text = as_text(row)
            if text is None:  # the hash lost an entry its sorted set still has (not written that way)
                continue
            try:
                changes.append(ChangeRecorded.model_validate_json(text))
            except ValidationError:
                log.warning("stored change unreadable; skipped", extra={"service": service})
        return changes
