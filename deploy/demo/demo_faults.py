"""The faults the demo injects, one after another, each into a demo service of its own.

Nothing here fires an alert: Prometheus's rules notice the fault and Alertmanager sends the alert to the bridge,
as in production. A fault says which alerts may open its incident and how it should end: `remediated` (an action
ran and its verification passed) or `escalated` (parked for a human, nothing forbidden run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from deploy.scenarios.catalog import deploy_bad_release
from deploy.scenarios.scenario_run import ScenarioRun

Expected = Literal["remediated", "escalated"]


@dataclass(frozen=True)
class DemoFault:
    name: str
    summary: str
    alertnames: tuple[str, ...]
    expected: Expected
    inject: Callable[[ScenarioRun], Awaitable[None]]
    needs_approval: bool = False


async def _crash(run: ScenarioRun) -> None:
    await run.target.fault("crash")
    run.fault_injected()
    run.say(f"fault injected: {run.target.process} crashed")


async def _disk_fill(run: ScenarioRun) -> None:
    old, fresh, size = 8, 2, 1 << 20
    await run.target.fault("disk_fill", {"files": old, "size_bytes": size, "age_s": 7200, "fresh_files": fresh})
    run.fault_injected()
    run.say(f"fault injected: {old} old and {fresh} fresh files of {size} bytes in {run.target.data_dir}")


async def _latency(run: ScenarioRun) -> None:
    await run.target.fault("latency", {"ms": 2000})
    run.fault_injected()
    run.say(f"fault injected: {run.target.service} answers after 2 s")


async def _corruption(run: ScenarioRun) -> None:
    await run.target.fault("data_corruption")
    run.fault_injected()
    run.say(f"fault injected: {run.target.service}'s data store reports corruption")


DEMO_FAULTS: dict[str, DemoFault] = {
    f.name: f
    for f in (
        DemoFault("crash", "the service crashes: restarted automatically", ("ServiceDown", "TargetDown"),
                  "remediated", _crash),
        DemoFault("disk-full", "old files fill its disk: cleaned inside the allowlist", ("DiskFull",), "remediated",
                  _disk_fill),
        DemoFault("bad-deploy", "a deploy serves errors: rollback, approved on the CLI", ("HighErrorRate",),
                  "remediated", deploy_bad_release, needs_approval=True),
        DemoFault("latency", "it answers slowly: restarted", ("HighLatency",), "remediated", _latency),
        DemoFault("db-corruption", "its data is corrupt: failover is FORBIDDEN, escalated to a human",
                  ("DatabaseCorruption",), "escalated", _corruption),
    )
}  # fmt: skip
