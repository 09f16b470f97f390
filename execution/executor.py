"""The action executor: checks a step against the catalog, runs it through its adapter, retries within bounds.

A step is refused without running when its action is not in the catalog, is FORBIDDEN, has invalid params or has
no adapter. Otherwise it runs up to 1 + retries times: `failed` and `timed_out` are retried after a backoff,
`succeeded` and `refused` are final. Each attempt gets `timeout_s`; the adapter is trusted to keep to it, and a
guard cancels it `guard_s` later if it does not. The returned result is the last attempt's, with `attempts` and
the total `duration_ms`.

Whether a step *should* run (its risk tier, approvals) is decided before it gets here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from bus.events import PlanStep
from execution.adapters import ActionAdapter
from execution.catalog import Catalog
from execution.results import RETRIABLE_STATUSES, ActionResult, elapsed_ms

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class BackoffPolicy(BaseModel):
    """Delay before retry n (1-based): initial_s × multiplier^(n-1), at most max_s."""

    model_config = ConfigDict(frozen=True)

    initial_s: float = Field(default=1.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=30.0, ge=0)
    # Extra time an adapter gets past its timeout before the executor cancels it.
    guard_s: float = Field(default=10.0, gt=0)

    def delay(self, retry: int) -> float:
        return min(self.max_s, self.initial_s * self.multiplier ** (retry - 1))


class StepOutcome(BaseModel):
    """One step of a rollback and how it went."""

    model_config = ConfigDict(frozen=True)

    step: PlanStep
    result: ActionResult


class ActionExecutor:
    def __init__(
        self,
        catalog: Catalog,
        adapters: Mapping[str, ActionAdapter],
        *,
        backoff: BackoffPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        for action, adapter in adapters.items():
            if adapter.name != action:
                raise ValueError(f"the adapter registered for {action!r} carries out {adapter.name!r}")
        self._catalog = catalog
        self._adapters = dict(adapters)
        self._backoff = backoff or BackoffPolicy()
        self._sleep = sleep

    async def execute(
        self, step: PlanStep, *, timeout_s: float | None = None, retries: int | None = None
    ) -> ActionResult:
        """Run `step` (timeout and retries default to the step's own)."""
        started = time.monotonic()
        timeout_s = step.timeout_s if timeout_s is None else timeout_s
        retries = step.retries if retries is None else retries
        problems = self._catalog.validate_step(step)
        adapter = self._adapters.get(step.action)
        if not problems and adapter is None:
            problems = [f"no adapter for action {step.action!r} on this agent"]
        if problems:
            log.warning("step refused", extra={"action": step.action, "target": step.target, "problems": problems})
            return ActionResult.refused("; ".join(problems), since=started)
        assert adapter is not None
        attempt = 1
        while True:
            result = await self._attempt(adapter, step, timeout_s)
            log.info(
                "attempt finished",
                extra={"action": step.action, "target": step.target, "attempt": attempt, "status": result.status},
            )
            if result.status not in RETRIABLE_STATUSES or attempt > retries:
                return result.model_copy(update={"attempts": attempt, "duration_ms": elapsed_ms(started)})
            await self._sleep(self._backoff.delay(attempt))
            attempt += 1

    async def rollback(self, steps: Sequence[PlanStep]) -> list[StepOutcome]:
        """Run every rollback step in order, each with its own timeout and retries; a failure does not stop the rest
        (each step restores something, and leaving the later ones undone would leave more broken)."""
        outcomes = []
        for step in steps:
            result = await self.execute(step)
            if not result.ok:
                log.error("rollback step failed", extra={"action": step.action, "target": step.target})
            outcomes.append(StepOutcome(step=step, result=result))
        return outcomes

    async def _attempt(self, adapter: ActionAdapter, step: PlanStep, timeout_s: float) -> ActionResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s + self._backoff.guard_s):
                return await adapter.execute(step, timeout_s=timeout_s)
        except TimeoutError:
            log.error("adapter overran its timeout, cancelled", extra={"action": step.action, "timeout_s": timeout_s})
            return ActionResult.timed_out(timeout_s, since=started)
