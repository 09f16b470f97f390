"""`opswarm demo`: the whole product on one machine.

It starts what is not running (the local stack with Prometheus, Alertmanager and the bridge; the five agents),
seeds the knowledge base with the runbooks of the demo's alerts (deploy/demo/runbooks), injects each fault into a demo service of its own, lets Prometheus → Alertmanager → bridge → swarm handle it
(granting, visibly on the CLI, the approval a risky fix asks for), prints a table of the incidents and last
`demo: faults=N remediated=N escalated=N mttr_s_p50=N swarm_share_s_p50=N verified=N`. It stops what it started
when it ends, Ctrl-C included, unless `--keep-running`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import typer
from rich.console import Console

from bus.producer import EventPublisher
from deploy.alert_rules import RUNBOOKS_DIR
from deploy.demo.demo_faults import DEMO_FAULTS
from deploy.demo.demo_report import FaultOutcome, demo_line, outcomes_table
from deploy.demo.demo_run import WATCHED, run_fault
from deploy.incidents_cli import incident_store
from deploy.scenarios.swarm_watch import SwarmWatch
from deploy.settings import CHECKOUT_DIR, Settings
from execution.catalog import default_catalog

console = Console(highlight=False)
_STEP_TIMEOUT_S = 600.0


def demo(
    ctx: typer.Context,
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the stack and the agents up."),
    fault: list[str] = typer.Option([], "--fault", help="Only this fault (repeatable); default: all, in order."),
    timeout_s: float = typer.Option(90.0, "--timeout", help="Upper bound for each wait of a fault."),
) -> None:
    """Break real demo services one after another and watch the swarm heal them; exit 1 unless all end as designed."""
    settings = ctx.find_object(Settings)
    assert settings is not None, "deploy.cli.main passes the Settings as the context object"
    unknown = sorted(set(fault) - set(DEMO_FAULTS))
    if unknown:
        raise typer.BadParameter(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(DEMO_FAULTS)}")
    started: list[list[str]] = []  # the `down` commands of what this demo started, in start order
    try:
        if not _cli_ok("status", "--check"):
            _cli("up")
            started.append(["down"])
        elif not _cli_ok("up"):  # a running stack follows the settings: its bridge moves to our topic namespace
            _cli("up")  # again, visibly: its table says what failed
        if not _cli_ok("agents", "status", "--check"):
            _cli("agents", "up")
            started.append(["agents", "down"])
        # The runbooks of the demo's alerts, into the knowledge base (unchanged ones are skipped): diagnosis
        # cites them in its evidence.
        _cli("kb", "ingest", str(RUNBOOKS_DIR))
        outcomes = asyncio.run(_run(settings, list(fault) or list(DEMO_FAULTS), timeout_s))
    finally:
        if keep_running:
            console.print("--keep-running: the stack and the agents stay up (`make down`, `opswarm agents down`)")
        else:
            for argv in reversed(started):
                _cli_ok(*argv)
    console.print(outcomes_table(outcomes))
    typer.echo(demo_line(outcomes))
    if not all(o.as_designed for o in outcomes):
        raise typer.Exit(1)


async def _run(settings: Settings, faults: list[str], timeout_s: float) -> list[FaultOutcome]:
    catalog = default_catalog()
    forbidden = frozenset(n for n in catalog.names() if (s := catalog.get(n)) and s.tier_floor == "FORBIDDEN")
    outcomes = []
    async with (
        SwarmWatch(settings.kafka, WATCHED) as watch,
        EventPublisher(settings.kafka, client_id="demo") as publisher,
        incident_store(settings) as store,
    ):
        for name in faults:
            fault = DEMO_FAULTS[name]
            outcomes.append(await run_fault(settings, fault, watch, publisher, store, console, timeout_s, forbidden))
    return outcomes


def _cli(*args: str) -> None:
    """`opswarm ARGS` as a visible step of the demo; stops the demo if it fails."""
    console.print(f"[bold]$ opswarm {' '.join(args)}[/bold]")
    result = subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=CHECKOUT_DIR, timeout=_STEP_TIMEOUT_S)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)


def _cli_ok(*args: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], cwd=CHECKOUT_DIR, capture_output=True, timeout=_STEP_TIMEOUT_S
    )
    return result.returncode == 0
