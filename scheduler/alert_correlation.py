"""Monitoring's memory of alerts in Redis: dedup, correlation into incidents, flap suppression, resolves.

Every alert gets exactly one outcome, so an alert storm can be accounted for to the last alert:

- `opened`: the first alert of its group within the correlation window opened a new incident;
- `merged`: it joined (or changed: re-fired, resolved) the open incident of its group;
- `duplicate`: the same alert with the same status again (Alertmanager re-sends firing alerts);
- `suppressed`: the alert is flapping (its status changed too often within the flap window), or it resolves an
  alert no open incident knows.

The decision for one alert is one Lua script, so monitoring replicas sharing Redis agree. Keys (standalone Redis):
`<prefix>:alerts:last:<fp>`, `:flap:<fp>`, `:alert:<fp>` (its incident), `:group:<key>` (open incident of a
group, expiring after the correlation window of quiet), `:incident:<id>` (alert fingerprint → status) and
`:decision:<event_id>`: the outcome of each alert event, so that an alert redelivered after an aborted Kafka
transaction gets the same outcome again instead of being taken for a duplicate.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from bus.alert_fingerprints import DEFAULT_GROUP_BY, FingerprintRule, fingerprint, group_key
from bus.events import AlertReceived
from scheduler.clock import Clock, WallClock
from scheduler.redis_area import DEFAULT_CALL_TIMEOUT_S, DEFAULT_PREFIX, RedisArea, as_int, as_text, milliseconds

log = logging.getLogger(__name__)

AREA = "alerts"
SEVERITY_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}

Kind = Literal["opened", "merged", "duplicate", "suppressed"]
Effect = Literal["opened", "alert_added", "alert_refired", "alert_resolved", "escalated", "resolved", "none"]


@dataclass(frozen=True)
class CorrelationRules:
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    fingerprint: FingerprintRule = FingerprintRule()
    # An open incident takes new alerts of its group until the group was quiet this long.
    correlation_window_s: float = 300.0
    # The same alert with the same status within this window is a duplicate.
    dedup_window_s: float = 60.0
    # This many status changes of one alert within the flap window mark it flapping.
    flap_threshold: int = 4
    flap_window_s: float = 600.0
    # How long alert and incident state is kept without news.
    state_ttl_s: float = 24 * 3600.0


@dataclass(frozen=True)
class CorrelationOutcome:
    kind: Kind
    effect: Effect
    incident_id: str | None
    fingerprint: str
    firing: int = 0
    total: int = 0
    reason: str = ""


# KEYS: last, flap, alert→incident, group, decision of this event.  ARGV: status, now, dedup_ms, flap_window_s,
# flap_threshold, group_window_ms, new incident id, fingerprint, severity rank, state ttl ms, incident key prefix.
# The decision is remembered by event id: a redelivered alert (its Kafka transaction aborted) gets the same answer.
_DECIDE = """
local remembered = redis.call('GET', KEYS[5])
if remembered then return cjson.decode(remembered) end
local function decide()
local status, now = ARGV[1], tonumber(ARGV[2])
local fp, rank = ARGV[8], tonumber(ARGV[9])
local ttl = tonumber(ARGV[10])
local last_status = redis.call('HGET', KEYS[1], 'status')
local last_at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
redis.call('HSET', KEYS[1], 'status', status, 'at', now)
redis.call('PEXPIRE', KEYS[1], ttl)
if last_status == status and (now - last_at) * 1000 < tonumber(ARGV[3]) then
  return {'duplicate', 'none', false, 0, 0, 'same status within the dedup window'}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
if last_status and last_status ~= status then
  redis.call('ZADD', KEYS[2], now, now .. ':' .. status)
  redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[4]) * 1000))
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return {'suppressed', 'none', redis.call('GET', KEYS[3]) or false, 0, 0, 'flapping'}
end
local function counts(alerts)
  local values = redis.call('HVALS', alerts)
  local firing = 0
  for _, v in ipairs(values) do if v == 'firing' then firing = firing + 1 end end
  return firing, #values
end
if status == 'firing' then
  local incident = redis.call('HGET', KEYS[4], 'incident')
  local kind, effect = 'merged', 'alert_added'
  if not incident then
    incident, kind, effect = ARGV[7], 'opened', 'opened'
    redis.call('HSET', KEYS[4], 'incident', incident, 'rank', rank)
  else
    local alerts = ARGV[11] .. incident
    local known = redis.call('HGET', alerts, fp)
    if known == 'firing' then effect = 'none' elseif known then effect = 'alert_refired' end
    if rank > tonumber(redis.call('HGET', KEYS[4], 'rank') or '0') then
      redis.call('HSET', KEYS[4], 'rank', rank)
      effect = 'escalated'
    end
  end
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
  local alerts = ARGV[11] .. incident
  redis.call('HSET', alerts, fp, 'firing')
  redis.call('PEXPIRE', alerts, ttl)
  redis.call('SET', KEYS[3], incident, 'PX', ttl)
  local firing, total = counts(alerts)
  if kind == 'merged' and effect == 'none' then
    return {'duplicate', 'none', incident, firing, total, 'already firing in its incident'}
  end
  return {kind, effect, incident, firing, total, ''}
end
local incident = redis.call('GET', KEYS[3])
if not incident then return {'suppressed', 'none', false, 0, 0, 'resolve of an alert no open incident knows'} end
local alerts = ARGV[11] .. incident
if redis.call('HGET', alerts, fp) ~= 'firing' then
  return {'duplicate', 'none', incident, 0, 0, 'already resolved'}
end
redis.call('HSET', alerts, fp, 'resolved')
local firing, total = counts(alerts)
if firing == 0 then
  if redis.call('HGET', KEYS[4], 'incident') == incident then redis.call('DEL', KEYS[4]) end
  return {'merged', 'resolved', incident, 0, total, ''}
end
return {'merged', 'alert_resolved', incident, firing, total, ''}
end
local decision = decide()
redis.call('SET', KEYS[5], cjson.encode(decision), 'PX', ARGV[10])
return decision
"""


def new_incident_id() -> str:
    return f"inc-{uuid.uuid4().hex[:12]}"


class AlertCorrelator:
    def __init__(
        self,
        redis: Redis,
        rules: CorrelationRules = CorrelationRules(),
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Clock | None = None,
        incident_ids: Callable[[], str] = new_incident_id,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self._rules = rules
        self._clock = clock or WallClock()
        self._incident_ids = incident_ids
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._decide = self._area.script(_DECIDE)
        # `<prefix>:alerts:incident:`; the script appends the incident id.
        self._incident_key_prefix = self._area.key("incident", "-").removesuffix("-")

    async def observe(self, alert: AlertReceived) -> CorrelationOutcome:
        """Decide what this alert means and remember it."""
        rules = self._rules
        fp = fingerprint(alert, rules.fingerprint)
        keys = [
            self._area.key("last", fp),
            self._area.key("flap", fp),
            self._area.key("alert", fp),
            self._area.key("group", group_key(alert, rules.group_by)),
            self._area.key("decision", alert.event_id),
        ]
        args = [
            alert.status,
            repr(self._clock.now()),
            milliseconds(rules.dedup_window_s),
            rules.flap_window_s,
            rules.flap_threshold,
            milliseconds(rules.correlation_window_s),
            self._incident_ids(),
            fp,
            SEVERITY_RANK[alert.severity],
            milliseconds(rules.state_ttl_s),
            self._incident_key_prefix,
        ]
        reply = await self._area.run("correlate", self._decide(keys=keys, args=args))
        kind, effect, incident, firing, total, reason = reply
        if incident is None or incident == 0:  # a remembered `false` comes back from cjson as nil / 0
            incident = None
        outcome = CorrelationOutcome(
            kind=as_text(kind),  # type: ignore[arg-type]
            effect=as_text(effect),  # type: ignore[arg-type]
            incident_id=as_text(incident) if incident else None,
            fingerprint=fp,
            firing=as_int(firing),
            total=as_int(total),
            reason=as_text(reason) or "",
        )
        log.debug("alert correlated", extra={"fingerprint": fp, "kind": outcome.kind, "effect": outcome.effect})
        return outcome
