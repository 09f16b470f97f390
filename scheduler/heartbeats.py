"""Agent heartbeats: which agent instances are alive, since when, and what they say they are doing.

Each instance's last beat is a hash that expires `ttl_s` after the beat, so a crashed instance disappears on
its own; a set indexes the hashes so `live()` needs no SCAN. A record older than `ttl_s` by the registry's
clock is not live either (its hash is about to expire), so `stale_after_s == ttl_s` whichever comes first.
Keys: `<prefix>:heartbeats:index` and `<prefix>:heartbeats:instance:<agent>:<instance_id>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from scheduler.clock import Clock, WallClock
from scheduler.redis_area import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_PREFIX,
    RedisArea,
    as_float,
    as_int,
    dump_json,
    fields_of,
    load_json,
    milliseconds,
)

log = logging.getLogger(__name__)

AREA = "heartbeats"
DEFAULT_TTL_S = 30.0

# Reads every indexed heartbeat hash; the ones that expired leave the index in the same atomic step, so a beat
# landing meanwhile (HSET + SADD in one transaction) is never dropped from the index.
_READ_LIVE = """
local out = {}
for i = 2, #KEYS do
  local fields = redis.call('HGETALL', KEYS[i])
  if #fields == 0 then
    redis.call('SREM', KEYS[1], KEYS[i])
  else
    out[#out + 1] = fields
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    agent: str
    instance_id: str
    pid: int
    started_at: float
    last_beat_at: float
    status: str
    details: dict[str, Any]
    age_s: float


def heartbeat_fields(
    agent: str, instance_id: str, pid: int, started_at: float, last_beat_at: float, status: str, details: dict[str, Any]
) -> dict[str, str]:
    """The hash one beat stores."""
    return {
        "agent": agent,
        "instance_id": instance_id,
        "pid": str(pid),
        "started_at": repr(started_at),
        "last_beat_at": repr(last_beat_at),
        "status": status,
        "details": dump_json(details),
    }


def record_from_fields(fields: dict[str, str], now: float) -> HeartbeatRecord:
    """A stored beat as a record; age is measured against `now` and never negative (clock skew between hosts)."""
    last_beat_at = as_float(fields.get("last_beat_at")) or 0.0
    return HeartbeatRecord(
        agent=fields.get("agent", ""),
        instance_id=fields.get("instance_id", ""),
        pid=as_int(fields.get("pid")),
        started_at=as_float(fields.get("started_at")) or 0.0,
        last_beat_at=last_beat_at,
        status=fields.get("status", ""),
        details=load_json(fields.get("details")) or {},
        age_s=max(0.0, now - last_beat_at),
    )


class HeartbeatRegistry:
    """Stores beats and lists the live ones; shared by every agent process and `opswarm agents status`."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Clock | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self._ttl_ms = milliseconds(ttl_s)
        self._ttl_s = ttl_s
        self._clock = clock or WallClock()
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._index = self._area.key("index")
        self._read_live = self._area.script(_READ_LIVE)

    @property
    def stale_after_s(self) -> float:
        return self._ttl_s

    async def beat(
        self,
        agent: str,
        instance_id: str,
        pid: int,
        started_at: float,
        status: str,
        details: dict[str, Any] | None = None,
    ) -> HeartbeatRecord:
        """Record that this instance is alive now; replaces its previous beat and restarts its expiry."""
        now = self._clock.now()
        fields = heartbeat_fields(agent, instance_id, pid, started_at, now, status, details or {})
        key = self._instance_key(agent, instance_id)
        async with self._area.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self._ttl_ms)
            pipe.sadd(self._index, key)
            await self._area.run("heartbeat.beat", pipe.execute())
        log.debug("heartbeat stored", extra={"agent": agent, "instance_id": instance_id, "status": status})
        return record_from_fields(fields, now)

    async def live(self) -> list[HeartbeatRecord]:
        """Every instance that beat within `ttl_s`, ordered by agent then instance id."""
        indexed = await self._area.run("heartbeat.index", self._area.redis.smembers(self._index))
        if not indexed:
            return []
        rows = await self._area.run("heartbeat.live", self._read_live(keys=[self._index, *sorted(indexed)]))
        now = self._clock.now()
        records = [record_from_fields(fields_of(row), now) for row in rows]
        live = [record for record in records if record.age_s <= self._ttl_s]
        return sorted(live, key=lambda record: (record.agent, record.instance_id))

    async def forget(self, agent: str, instance_id: str) -> bool:
        """Remove an instance's beat at once (a clean shutdown); False when there was none."""
        key = self._instance_key(agent, instance_id)
        async with self._area.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(self._index, key)
            deleted, _ = await self._area.run("heartbeat.forget", pipe.execute())
        return bool(deleted)

    def _instance_key(self, agent: str, instance_id: str) -> str:
        # The agent name may not hold ':' so that (agent, instance_id) maps to exactly one key.
        if ":" in agent:
            raise ValueError("an agent name must not contain ':'")
        return self._area.key("instance", agent, instance_id)
