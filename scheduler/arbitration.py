"""Arbitration between actions: one active action per resource, rate limits, circuit breakers, a waiting line.

Coordination asks `admit` before it approves an action:

- the resource (the step's target) is leased to the incident for the action's lifetime, so two incidents never
  act on one resource at once; the same incident asking again is admitted again (a redelivered event);
- a rate limit per (action, service) — e.g. at most 3 restarts of a service per hour — counted by action id, so
  asking twice for one action counts once;
- the circuit breaker of the service: after N consecutive failed actions its automation is off until a human
  resets it.

An incident that finds the resource busy waits in line; when the holder is done, `next_waiting` hands the
resource to the waiting incident of highest severity, and among equals the lowest risk, then the earliest.
Keys: `<prefix>:arbitration:waiting:<resource>` besides those of leases, rate limits and breakers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from scheduler.circuit_breakers import BreakerState, CircuitBreakers
from scheduler.clock import Clock, WallClock
from scheduler.leases import ResourceLeases
from scheduler.rate_limits import SlidingWindowLimiter
from scheduler.redis_area import DEFAULT_PREFIX, RedisArea, as_text

log = logging.getLogger(__name__)

AREA = "arbitration"
SEVERITY_RANK = {"critical": 3, "high": 2, "warning": 1, "info": 0}


class RateLimitRule(BaseModel):
    limit: int = Field(ge=1)
    window_s: float = Field(gt=0)


class ArbitrationPolicy(BaseModel):
    lease_ttl_s: float = Field(default=900.0, gt=0)
    # Per action name; an action without a rule is not rate limited.
    rate_limits: dict[str, RateLimitRule] = Field(
        default_factory=lambda: {
            "restart_process": RateLimitRule(limit=3, window_s=3600),
            "rollback_deploy": RateLimitRule(limit=2, window_s=3600),
            "scale": RateLimitRule(limit=6, window_s=3600),
        }
    )
    breaker_threshold: int = Field(default=3, ge=1)


@dataclass(frozen=True)
class Admission:
    status: Literal["granted", "busy", "rate_limited", "breaker_open"]
    reason: str
    holder: str | None = None


def waiting_priority(severity: str | None, risk_score: float, arrived_at: float) -> float:
    """The sorted-set score of a waiting incident: lower goes first (severity, then risk, then arrival)."""
    rank = SEVERITY_RANK.get(severity or "", 0)
    # Severity dominates (steps of 10), risk in [0, 1] breaks ties, arrival (scaled far below) breaks the rest.
    return (3 - rank) * 10 + round(risk_score, 4) + min(arrived_at, 1e10) * 1e-12


class ActionArbiter:
    def __init__(
        self,
        redis: Redis,
        prefix: str = DEFAULT_PREFIX,
        policy: ArbitrationPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy or ArbitrationPolicy()
        self._clock = clock or WallClock()
        self._area = RedisArea(redis, prefix=prefix, area=AREA)
        self._leases = ResourceLeases(redis, prefix)
        self._limits = SlidingWindowLimiter(redis, prefix, self._clock)
        self._breakers = CircuitBreakers(redis, prefix, self._clock, failure_threshold=self.policy.breaker_threshold)

    async def breaker(self, service: str) -> BreakerState:
        return await self._breakers.state(service)

    async def admit(
        self,
        *,
        incident_id: str,
        action_id: str,
        action: str,
        resource: str,
        service: str,
    ) -> Admission:
        """Lease `resource` to the incident and count the action against its rate limit, or say why not."""
        breaker = await self._breakers.state(service)
        if breaker.open:
            return Admission(
                "breaker_open",
                f"automation for {service} is off: {breaker.consecutive_failures} consecutive failed actions",
            )
        lease = await self._leases.acquire(resource, incident_id, self.policy.lease_ttl_s)
        if not lease.acquired:
            return Admission(
                "busy",
                f"{resource} is in use by the action of incident {lease.holder}",
                lease.holder,
            )
        rule = self.policy.rate_limits.get(action)
        if rule is not None:
            decision = await self._limits.try_acquire(f"{action}:{service}", rule.limit, rule.window_s, action_id)
            if not decision.allowed:
                await self._leases.release(resource, incident_id)
                return Admission(
                    "rate_limited",
                    f"rate limit: {action} of {service} already ran {decision.count} times within "
                    f"{rule.window_s:g} s (limit {rule.limit}); retry in {decision.retry_after_s:.0f} s",
                )
        return Admission("granted", f"{resource} leased to incident {incident_id}")

    async def holder(self, resource: str) -> str | None:
        return await self._leases.holder(resource)

    async def release(self, resource: str, incident_id: str) -> bool:
        return await self._leases.release(resource, incident_id)

    async def record_outcome(self, service: str, *, succeeded: bool) -> BreakerState:
        if succeeded:
            return await self._breakers.record_success(service)
        return await self._breakers.record_failure(service)

    async def wait_for(self, resource: str, incident_id: str, priority: float) -> None:
        """Put the incident in line for `resource` (again: its place is updated, not doubled)."""
        key = self._area.key("waiting", resource)
        await self._area.run("arbitration.wait", self._area.redis.zadd(key, {incident_id: priority}))

    async def next_waiting(self, resource: str) -> str | None:
        """Take the first incident waiting for `resource` out of the line."""
        key = self._area.key("waiting", resource)
        popped = await self._area.run("arbitration.pop", self._area.redis.zpopmin(key, 1))
        return as_text(popped[0][0]) if popped else None

    async def waiting(self, resource: str) -> list[str]:
        key = self._area.key("waiting", resource)
        members = await self._area.run("arbitration.waiting", self._area.redis.zrange(key, 0, -1))
        return [as_text(m) or "" for m in members]

    def now(self) -> float:
        return self._clock.now()
