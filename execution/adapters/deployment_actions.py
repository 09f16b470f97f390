"""The `scale` and `rollback_deploy` actions, on any `DeploymentPlatform`. The step's target is the service.

Each result's data holds `previous` and `current` (replica count or version), which is what a rollback step of
this action needs: `scale` back to `previous` replicas, `rollback_deploy` back to `previous` version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from bus.events import PlanStep
from execution.adapters import ParamsCheckingAdapter
from execution.adapters.deployment_platform import Change, DeploymentError, DeploymentPlatform, DeploymentRefused
from execution.catalog import RollbackDeployParams, ScaleParams
from execution.results import ActionResult

log = logging.getLogger(__name__)


class ScaleAdapter(ParamsCheckingAdapter[ScaleParams]):
    name = "scale"
    params_model = ScaleParams

    def __init__(self, platform: DeploymentPlatform) -> None:
        self._platform = platform

    async def run(self, step: PlanStep, params: ScaleParams, *, timeout_s: float, started: float) -> ActionResult:
        return await _platform_call(self._platform.scale(step.target, params.replicas), step, timeout_s, started)


class RollbackDeployAdapter(ParamsCheckingAdapter[RollbackDeployParams]):
    name = "rollback_deploy"
    params_model = RollbackDeployParams

    def __init__(self, platform: DeploymentPlatform) -> None:
        self._platform = platform

    async def run(
        self, step: PlanStep, params: RollbackDeployParams, *, timeout_s: float, started: float
    ) -> ActionResult:
        return await _platform_call(self._platform.rollback(step.target, params.to_version), step, timeout_s, started)


async def _platform_call(call: Awaitable[Change], step: PlanStep, timeout_s: float, started: float) -> ActionResult:
    data = {"service": step.target}
    try:
        async with asyncio.timeout(timeout_s):
            change = await call
    except TimeoutError:
        return ActionResult.timed_out(timeout_s, since=started, data=data)
    except DeploymentRefused as exc:
        return ActionResult.refused(str(exc), since=started, data=data)
    except DeploymentError as exc:
        log.warning("deployment platform failed", extra={"action": step.action, "service": step.target})
        return ActionResult.failed(str(exc), since=started, data=data)
    return ActionResult.succeeded(change.model_dump(), since=started)
