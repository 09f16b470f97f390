"""The `restart_process` action: restart a process managed by the local `ProcessSupervisor`.

The step's target is the managed process's name; `grace_s` is how long it gets to exit after SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging

from bus.events import PlanStep
from execution.adapters import ParamsCheckingAdapter
from execution.adapters.process_supervisor import ProcessSupervisor, SupervisorError
from execution.catalog import RestartProcessParams
from execution.results import ActionResult

log = logging.getLogger(__name__)


class RestartProcessAdapter(ParamsCheckingAdapter[RestartProcessParams]):
    name = "restart_process"
    params_model = RestartProcessParams

    def __init__(self, supervisor: ProcessSupervisor) -> None:
        self._supervisor = supervisor

    async def run(
        self, step: PlanStep, params: RestartProcessParams, *, timeout_s: float, started: float
    ) -> ActionResult:
        before = self._supervisor.status(step.target)
        if before is None:
            return ActionResult.refused(f"no managed process named {step.target!r}", since=started)
        try:
            async with asyncio.timeout(timeout_s):
                after = await self._supervisor.restart(step.target, timeout_s=min(params.grace_s, timeout_s))
        except TimeoutError:
            return ActionResult.timed_out(timeout_s, since=started, data={"previous_pid": before.pid})
        except SupervisorError as exc:
            log.warning("restart failed", extra={"managed_process": step.target, "error": str(exc)})
            return ActionResult.failed(str(exc), since=started, data={"previous_pid": before.pid})
        return ActionResult.succeeded({"previous_pid": before.pid, "pid": after.pid}, since=started)
