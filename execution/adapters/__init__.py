"""Action adapters: one per catalog action, each turning a `PlanStep` into an `ActionResult`.

An adapter never raises for an expected failure (bad params, unknown target, a process that will not start, an
HTTP error, a timeout); it returns `failed`, `timed_out` or `refused` with the reason in `error`.
"""

from __future__ import annotations

import time
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from bus.events import PlanStep
from execution.results import ActionResult, describe_validation_error

ParamsT = TypeVar("ParamsT", bound=BaseModel)


class ActionAdapter(Protocol):
    """Carries out one catalog action."""

    @property
    def name(self) -> str:
        """The catalog action this adapter carries out."""
        ...

    async def execute(self, step: PlanStep, *, timeout_s: float) -> ActionResult: ...


class ParamsCheckingAdapter(Generic[ParamsT]):
    """Base of the adapters here: `execute` validates `step.params` as `params_model` (refusing invalid ones),
    then calls `run` with the typed params and the `time.monotonic()` reading it started at."""

    name: str
    params_model: type[ParamsT]

    async def execute(self, step: PlanStep, *, timeout_s: float) -> ActionResult:
        started = time.monotonic()
        try:
            params = self.params_model.model_validate(step.params)
        except ValidationError as exc:
            error = f"invalid params for {step.action}: {describe_validation_error(exc)}"
            return ActionResult.refused(error, since=started)
        return await self.run(step, params, timeout_s=timeout_s, started=started)

    async def run(self, step: PlanStep, params: ParamsT, *, timeout_s: float, started: float) -> ActionResult:
        raise NotImplementedError
