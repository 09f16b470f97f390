"""Idempotency keys: the first claimant of a key runs the work, every later claimant sees what became of it.

Execution claims a key per approved action before acting, and finishes it with the outcome. A repeated
claim (a redelivered event, a restarted process) gets `first=False` with the stored state: `in_progress`
(someone started and has not finished, perhaps it crashed: do not run again, escalate) or `done` with the
result. Records are kept for `ttl_s` (7 days by default). Keys: `<prefix>:idempotency:<key>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from scheduler.clock import Clock, WallClock
from scheduler.redis_area import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_PREFIX,
    RawValue,
    RedisArea,
    as_int,
    dump_json,
    fields_of,
    load_json,
    milliseconds,
)

log = logging.getLogger(__name__)

AREA = "idempotency"
DEFAULT_TTL_S = 7 * 24 * 3600.0

ClaimState = Literal["in_progress", "done"]

# ARGV: owner, now, ttl ms. Reply: {1 if this call claimed the key else 0, the record as a flat list}.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'in_progress', 'owner', ARGV[1], 'claimed_at', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, redis.call('HGETALL', KEYS[1])}
end
return {0, redis.call('HGETALL', KEYS[1])}
"""

# ARGV: result JSON, now, ttl ms, owner ('' for any). The first result stays: a finished key is not rewritten.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' then return 0 end
if ARGV[4] ~= '' and state and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'result', ARGV[1], 'finished_at', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# ARGV: owner. Only an unfinished claim of this owner is dropped.
_ABANDON = """
if redis.call('HGET', KEYS[1], 'state') == 'in_progress' and redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    first: bool
    state: ClaimState
    result: dict[str, Any] | None
    # Who claimed the key first.
    owner: str | None


def claim_from_reply(first: RawValue, fields: dict[str, str]) -> ClaimResult:
    state: ClaimState = "done" if fields.get("state") == "done" else "in_progress"
    return ClaimResult(
        first=bool(as_int(first)),
        state=state,
        result=load_json(fields.get("result")),
        owner=fields.get("owner") or None,
    )


class IdempotencyStore:
    """Claim, finish and (before any effect) abandon idempotency keys."""

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
        self._clock = clock or WallClock()
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._claim = self._area.script(_CLAIM)
        self._finish = self._area.script(_FINISH)
        self._abandon = self._area.script(_ABANDON)

    async def claim(self, key: str, owner: str) -> ClaimResult:
        """Claim `key` for `owner`; exactly one of any number of concurrent claims gets `first=True`."""
        if not owner:
            raise ValueError("owner must not be empty")
        first, row = await self._area.run(
            "idempotency.claim",
            self._claim(keys=[self._area.key(key)], args=[owner, self._clock.now(), self._ttl_ms]),
        )
        claim = claim_from_reply(first, fields_of(row))
        if not claim.first:
            log.info("idempotency key already claimed", extra={"key": key, "owner": owner, "state": claim.state})
        return claim

    async def finish(self, key: str, result: dict[str, Any], owner: str | None = None) -> bool:
        """Mark `key` done with `result`, kept for ttl_s from now. False (nothing changes) when it was done
        already or, with `owner`, when someone else claimed it."""
        args = [dump_json(result), self._clock.now(), self._ttl_ms, owner or ""]
        return bool(await self._area.run("idempotency.finish", self._finish(keys=[self._area.key(key)], args=args)))

    async def abandon(self, key: str, owner: str) -> bool:
        """Drop `owner`'s unfinished claim so the work can be claimed again: only when nothing was done yet
        (say the resource lease was refused). False when the claim is someone else's or finished."""
        dropped = await self._area.run("idempotency.abandon", self._abandon(keys=[self._area.key(key)], args=[owner]))
        return bool(dropped)
