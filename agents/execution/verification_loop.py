"""The verification loop: due verification timers in, VerificationPassed or VerificationFailed out.

Every `poll_every_s` the loop claims the due timers (leased for `lease_s`) and verifies each one's approval:

- the verify query is judged (`execution.verification`); passed → VerificationPassed(observed);
- failed (value off, or no data) → the approval's rollback steps run, then VerificationFailed(rolled_back=...);
- unknown (no metrics source, unreachable) → VerificationFailed with the reason, nothing rolled back: we could
  not look, which says nothing about the fix.

The verdict and its rollback run once per action, under the idempotency key `<idempotency_key>:verification`
(see `run_once`): a timer that fires again (its worker crashed after publishing and before completing it, or a
repeated approval set it again later) publishes the recorded answer again, and a verification interrupted
mid-way is answered VerificationFailed("interrupted ...") without running the rollback a second time. The event
id of the answer is derived from the action id, so a repeat duplicates nothing downstream. The timer is completed
only after Kafka acknowledged the answer, so a crash before that fires it again instead of losing it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from agents.execution.action_runs import PRODUCER, approval_context, derived_event_id, roll_back
from agents.execution.run_once import RunOnce
from bus.events import ActionApproved, Event, VerificationFailed, VerificationPassed
from bus.producer import EventPublisher
from execution.executor import ActionExecutor
from execution.prometheus_queries import MetricsQueries
from execution.verification import verify
from scheduler.timers import DurableTimers, Timer, fire_due, poll_due

log = logging.getLogger(__name__)


def verification_event_id(action_id: str) -> str:
    return derived_event_id(action_id, "verification")


class VerificationLoop:
    def __init__(
        self,
        timers: DurableTimers,
        once: RunOnce,
        executor: ActionExecutor,
        metrics: MetricsQueries | None,
        publisher: EventPublisher,
        *,
        poll_every_s: float,
        lease_s: float,
        query_timeout_s: float,
        batch: int = 10,
    ) -> None:
        self._timers = timers
        self._once = once
        self._executor = executor
        self._metrics = metrics
        self._publisher = publisher
        self._poll_every_s = poll_every_s
        self._lease_s = lease_s
        self._query_timeout_s = query_timeout_s
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        """Verify due timers until `stop` is set (a task for `run_agent`)."""
        async with self._publisher:
            await poll_due(stop, self._poll_every_s, self.verify_due)

    async def verify_due(self) -> int:
        """Claim the due timers and verify them concurrently; how many were claimed."""
        return await fire_due(self._timers, self._once.owner, self._fire, batch=self._batch, lease_s=self._lease_s,
                              what="verification")  # fmt: skip

    async def _fire(self, timer: Timer) -> None:
        try:
            await self.verify_timer(timer)
        except Exception:  # the lease runs out and the timer fires again; the loop goes on with the others
            log.exception("verification not completed; it fires again", extra={"timer_id": timer.timer_id})

    async def verify_timer(self, timer: Timer) -> Event | None:
        """Verify one claimed timer's approval, publish the answer, then complete the timer."""
        approved = _approval_in(timer)
        if approved is None:
            await self._timers.complete(timer.timer_id, self._once.owner)
            return None
        context = {**approval_context(approved), "timer_id": timer.timer_id, "timer_attempts": timer.attempts}
        ran = await self._once.run(
            f"{approved.idempotency_key}:verification",
            lambda: self._verify(approved, context),
            lambda why: _verdict(
                approved, VerificationFailed, reason=f"interrupted: {why}; rollback outcome unknown; not run twice"
            ),
        )
        await self._publisher.publish(ran.outcome)
        if not await self._timers.complete(timer.timer_id, self._once.owner):
            log.warning("verification timer was no longer ours to complete", extra=context)
        log.info("verification answered", extra={**context, "outcome": ran.outcome.type, "how": ran.how})
        return ran.outcome

    async def _verify(self, approved: ActionApproved, context: dict[str, Any]) -> Event:
        spec = approved.verify
        assert spec is not None
        verdict = await verify(spec, self._metrics, timeout_s=self._query_timeout_s)
        log.info("verified", extra={**context, "verdict": verdict.status, "observed": verdict.observed})
        if verdict.status == "passed":
            return _verdict(approved, VerificationPassed, observed=verdict.observed)
        reason, rolled_back = verdict.reason, False
        if verdict.status == "failed" and approved.rollback:
            rolled_back, summary = await roll_back(self._executor, approved.rollback, context)
            reason = f"{reason}; {summary}"
        return _verdict(approved, VerificationFailed, observed=verdict.observed, reason=reason, rolled_back=rolled_back)


def _approval_in(timer: Timer) -> ActionApproved | None:
    """The approval a timer verifies; None (logged) when its payload holds none, or one without a verify spec."""
    try:
        approved = ActionApproved.model_validate(timer.payload.get("approval"))
    except ValidationError as exc:
        context = {"timer_id": timer.timer_id, "error": str(exc)}
        log.error("verification timer without a valid approval, dropped", extra=context)
        return None
    if approved.verify is None:
        log.error("verification timer for an approval without verify, dropped", extra={"timer_id": timer.timer_id})
        return None
    return approved


def _verdict(approved: ActionApproved, verdict_cls: type[Event], **content: Any) -> Event:
    """The verification answer for `approved`'s action (its event id derived from the action id)."""
    return approved.follow(
        verdict_cls,
        produced_by=PRODUCER,
        event_id=verification_event_id(approved.action_id),
        action_id=approved.action_id,
        verify=approved.verify,
        **content,
    )
