"""The executor: refusals before anything runs, bounded retries with backoff, the timeout guard, rollbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from bus.events import PlanStep
from execution.catalog import default_catalog
from execution.executor import ActionExecutor, BackoffPolicy
from execution.results import ActionResult, ActionStatus


class ScriptedAdapter:
    """Returns the given statuses in turn (the last one forever) and records every step it was asked to run."""

    def __init__(self, name: str, statuses: Iterable[ActionStatus], *, hang: bool = False) -> None:
        self.name = name
        self._statuses = list(statuses)
        self._hang = hang
        self.calls: list[tuple[PlanStep, float]] = []

    async def execute(self, step: PlanStep, *, timeout_s: float) -> ActionResult:
        self.calls.append((step, timeout_s))
        if self._hang:
            await asyncio.Event().wait()
        status = self._statuses[min(len(self.calls), len(self._statuses)) - 1]
        return ActionResult(status=status, error=None if status == "succeeded" else f"{status} #{len(self.calls)}")


class RecordedSleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


RESTART = PlanStep(action="restart_process", target="web")
BACKOFF = BackoffPolicy(initial_s=0.5, multiplier=2.0, max_s=1.5, guard_s=0.05)


def executor_with(*adapters: ScriptedAdapter, sleeps: RecordedSleeps | None = None) -> ActionExecutor:
    return ActionExecutor(
        default_catalog(), {a.name: a for a in adapters}, backoff=BACKOFF, sleep=sleeps or RecordedSleeps()
    )


async def test_success_at_first_attempt_runs_once() -> None:
    adapter = ScriptedAdapter("restart_process", ["succeeded"])
    result = await executor_with(adapter).execute(RESTART, timeout_s=7, retries=3)
    assert result.status == "succeeded" and result.attempts == 1
    assert adapter.calls == [(RESTART, 7)]


async def test_retries_with_backoff_then_fails() -> None:
    adapter, sleeps = ScriptedAdapter("restart_process", ["failed"]), RecordedSleeps()
    result = await executor_with(adapter, sleeps=sleeps).execute(RESTART, timeout_s=5, retries=3)
    assert result.status == "failed" and result.error == "failed #4"
    assert result.attempts == 4 and len(adapter.calls) == 4
    assert sleeps.delays == [0.5, 1.0, 1.5]


async def test_a_timed_out_attempt_is_retried_until_success() -> None:
    adapter = ScriptedAdapter("restart_process", ["timed_out", "failed", "succeeded"])
    result = await executor_with(adapter).execute(RESTART, timeout_s=5, retries=5)
    assert result.status == "succeeded" and result.attempts == 3


async def test_retries_and_timeout_default_to_the_step() -> None:
    adapter = ScriptedAdapter("restart_process", ["failed"])
    step = PlanStep(action="restart_process", target="web", timeout_s=12, retries=2)
    result = await executor_with(adapter).execute(step)
    assert result.attempts == 3 and {timeout for _, timeout in adapter.calls} == {12}


async def test_a_refusal_from_the_adapter_is_not_retried() -> None:
    adapter = ScriptedAdapter("restart_process", ["refused"])
    result = await executor_with(adapter).execute(RESTART, timeout_s=5, retries=3)
    assert result.status == "refused" and result.attempts == 1


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (PlanStep(action="delete_data", target="orders"), "'delete_data' is FORBIDDEN"),
        (PlanStep(action="failover_database", target="orders-db"), "'failover_database' is FORBIDDEN"),
        (PlanStep(action="reboot_host", target="web-1"), "unknown action 'reboot_host'"),
        (PlanStep(action="scale", target="web", params={"replicas": -2}), "invalid params for scale"),
        (PlanStep(action="flush_connection_pool", target="web"), "no adapter for action 'flush_connection_pool'"),
    ],
    ids=["forbidden", "forbidden-failover", "unknown", "bad-params", "no-adapter"],
)
async def test_refused_before_any_adapter_runs(step: PlanStep, error: str) -> None:
    # Every action has an adapter here except flush_connection_pool; none may be called.
    adapters = [ScriptedAdapter(name, ["succeeded"]) for name in ("delete_data", "failover_database", "scale")]
    result = await executor_with(*adapters).execute(step, timeout_s=5, retries=3)
    assert result.status == "refused" and error in (result.error or ""), result
    assert all(adapter.calls == [] for adapter in adapters)


async def test_an_adapter_that_overruns_its_timeout_is_cancelled() -> None:
    adapter = ScriptedAdapter("restart_process", [], hang=True)
    result = await executor_with(adapter).execute(RESTART, timeout_s=0.05, retries=1)
    assert result.status == "timed_out" and result.attempts == 2


async def test_rollback_runs_every_step_in_order_and_reports_each() -> None:
    scale = ScriptedAdapter("scale", ["failed"])
    restart = ScriptedAdapter("restart_process", ["succeeded"])
    steps = [
        PlanStep(action="scale", target="web", params={"replicas": 2}),
        PlanStep(action="delete_data", target="orders"),
        PlanStep(action="restart_process", target="web"),
    ]
    outcomes = await executor_with(scale, restart).rollback(steps)
    assert [outcome.step for outcome in outcomes] == steps
    assert [outcome.result.status for outcome in outcomes] == ["failed", "refused", "succeeded"]
    assert len(scale.calls) == 1 and len(restart.calls) == 1


def test_an_adapter_registered_under_another_action_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="the adapter registered for 'scale' carries out 'restart_process'"):
        ActionExecutor(default_catalog(), {"scale": ScriptedAdapter("restart_process", ["succeeded"])})


@pytest.mark.parametrize(("retry", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (20, 30.0)])
def test_backoff_grows_and_is_bounded(retry: int, delay: float) -> None:
    assert BackoffPolicy().delay(retry) == pytest.approx(delay)
