"""Answering an approved action: run it at most once, then ActionExecuted or ActionFailed, and arrange verification.

Each `ActionApproved` is run under its `idempotency_key` (see `run_once`): the first claimant runs the step
through the `ActionExecutor` and records the answer; a repeat gets the recorded answer again, re-addressed to the
approval it answers; a claim left unfinished (a crash mid-action, in another instance or in an earlier life of
this one) is answered `ActionFailed("interrupted: ...")` and nothing runs, so coordination escalates. Never
executed twice, also across a crash.

A step that was attempted and did not succeed (failed, timed out) is undone with the approval's rollback steps, if
it carries any; a refused step changed nothing and is not rolled back. An executed approval that carries `verify`
gets a durable timer (id = action_id, due after verify.window_s, payload = the approval) that the verification
loop picks up. The timer is set again when a repeat replays an executed answer (a no-op while it is pending), so a
crash between recording and scheduling loses no verification; the verification itself runs once per action.

Answers to one approval event have a deterministic event id, so a repeated answer duplicates nothing downstream.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from agents.execution.run_once import RunOnce
from bus.events import ActionApproved, ActionExecuted, ActionFailed, Event, PlanStep
from execution.executor import ActionExecutor
from execution.results import ActionResult
from scheduler.clock import Clock, WallClock
from scheduler.timers import DurableTimers

log = logging.getLogger(__name__)

PRODUCER = "execution"
E = TypeVar("E", bound=Event)
_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://opswarm/execution")
# The envelope is the answer's own; everything else of a recorded answer is its content.
_ENVELOPE = frozenset(Event.model_fields)


def derived_event_id(*parts: str) -> str:
    """A deterministic event id: the same parts always give the same id."""
    return str(uuid.uuid5(_IDS, "/".join(parts)))


def approval_context(approved: ActionApproved) -> dict[str, Any]:
    """What every log line about an approval carries in `extra`."""
    return {
        "action_id": approved.action_id,
        "action": approved.step.action,
        "target": approved.step.target,
        "idempotency_key": approved.idempotency_key,
        "incident_id": approved.incident_id,
        "approval_event_id": approved.event_id,
    }


async def roll_back(executor: ActionExecutor, steps: Sequence[PlanStep], context: dict[str, Any]) -> tuple[bool, str]:
    """Run the rollback steps; (whether every one succeeded, a summary for the answer's reason)."""
    log.warning("rolling back", extra={**context, "rollback_steps": len(steps)})
    try:
        outcomes = await executor.rollback(steps)
    except Exception as exc:  # noqa: BLE001 - adapters return results; whatever escapes still gets an answer
        log.exception("rollback raised", extra=context)
        return False, f"rollback raised {type(exc).__name__}: {exc}"
    failed = [
        f"{o.step.action} {o.step.target}: {o.result.error or o.result.status}" for o in outcomes if not o.result.ok
    ]
    log.info("rolled back", extra={**context, "rollback_steps": len(outcomes), "rollback_failures": len(failed)})
    if failed:
        return False, f"rollback incomplete: {len(failed)} of {len(outcomes)} steps failed ({'; '.join(failed)})"
    return True, f"rolled back ({len(outcomes)} steps)"


def _answer(approved: ActionApproved, answer_cls: type[E], **content: Any) -> E:
    """An answer to `approved` (its event id derived from the approval's): action, step and key filled in."""
    defaults = {"action_id": approved.action_id, "step": approved.step, "idempotency_key": approved.idempotency_key}
    return approved.follow(
        answer_cls,
        produced_by=PRODUCER,
        event_id=derived_event_id(approved.event_id, "outcome"),
        **{**defaults, **content},
    )


class ActionRuns:
    """The execution agent's answer to each approval."""

    def __init__(
        self,
        executor: ActionExecutor,
        once: RunOnce,
        timers: DurableTimers,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._executor = executor
        self._once = once
        self._timers = timers
        self._clock = clock or WallClock()

    async def answer(self, approved: ActionApproved) -> Event:
        """ActionExecuted or ActionFailed for `approved`; the step runs only if nobody claimed its key before."""
        context = approval_context(approved)
        ran = await self._once.run(
            approved.idempotency_key,
            lambda: self._execute(approved, context),
            lambda why: self._failed(approved, f"interrupted: {why}; outcome unknown; not run twice"),
        )
        outcome = ran.outcome
        if ran.how == "replayed":
            log.info("approval answered again from the recorded outcome", extra={**context, "outcome": outcome.type})
            outcome = self._readdressed(approved, outcome)
        if isinstance(outcome, ActionExecuted) and approved.verify is not None:
            await self._schedule_verification(approved, context)
        return outcome

    async def _execute(self, approved: ActionApproved, context: dict[str, Any]) -> Event:
        log.info("executing action", extra={**context, "mode": approved.mode, "approved_by": approved.approved_by})
        started = time.monotonic()
        try:
            result = await self._executor.execute(approved.step)
        except Exception as exc:  # noqa: BLE001 - adapters return results; whatever escapes still gets an answer
            log.exception("executor raised", extra=context)
            result = ActionResult.failed(f"the executor raised {type(exc).__name__}: {exc}", since=started)
        if result.ok:
            timing = {"attempts": result.attempts, "duration_ms": result.duration_ms}
            log.info("action executed", extra={**context, **timing})
            return _answer(approved, ActionExecuted, output=result.data, **timing)
        error = f"{result.status}: {result.error or 'no reason given'}"
        log.warning("action did not succeed", extra={**context, "status": result.status, "error": result.error})
        rolled_back = False
        if approved.rollback and result.status != "refused":
            rolled_back, summary = await roll_back(self._executor, approved.rollback, context)
            error = f"{error}; {summary}"
        return self._failed(approved, error, attempts=result.attempts, rolled_back=rolled_back)

    def _failed(self, approved: ActionApproved, error: str, *, attempts: int = 1, rolled_back: bool = False) -> Event:
        return _answer(approved, ActionFailed, error=error, attempts=attempts, rolled_back=rolled_back)

    def _readdressed(self, approved: ActionApproved, recorded: Event) -> Event:
        """The recorded answer as the answer to `approved`: itself when it answered this very approval event,
        else the same content in an envelope that follows `approved` (another approval with the same key)."""
        if recorded.causation_id == approved.event_id:
            return recorded
        return _answer(approved, type(recorded), **recorded.model_dump(exclude=set(_ENVELOPE)))

    async def _schedule_verification(self, approved: ActionApproved, context: dict[str, Any]) -> None:
        assert approved.verify is not None
        due_at = self._clock.now() + approved.verify.window_s
        payload = {"approval": approved.model_dump(mode="json")}
        if await self._timers.schedule(approved.action_id, due_at, payload):
            log.info("verification scheduled", extra={**context, "due_at": due_at, "query": approved.verify.query})
