"""`opswarm scenario list|run NAME`: break a real local target and watch the live swarm handle it.

`run` needs the local stack (`opswarm up`) and the swarm (`opswarm agents up`). It prints what happens as it
happens, then each incident's timeline and actions, and last the scenario's line.
"""

from __future__ import annotations

import asyncio
import uuid

import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bus.producer import EventPublisher
from deploy.incident_reports import actions_table, timeline_table
from deploy.incidents_cli import incident_store
from deploy.scenarios.catalog import SCENARIOS
from deploy.scenarios.scenario_run import ScenarioResult, ScenarioRun, summarize
from deploy.scenarios.swarm_watch import SwarmWatch
from deploy.scenarios.targets import ScenarioTarget, free_port
from deploy.settings import Settings
from execution.catalog import default_catalog
from scheduler.heartbeats import HeartbeatRegistry

scenario_app = typer.Typer(no_args_is_help=True, help="Inject real faults and let the live swarm handle them.")
console = Console(highlight=False)
AGENTS = ("monitoring", "diagnosis", "coordination", "execution", "knowledge")
_SCRAPE_WAIT_S = 30.0
APPROVE_VIA = ("cli", "web", "none")


@scenario_app.command("list")
def list_scenarios() -> None:
    """The scenarios and what each should end with."""
    table = Table(title="scenarios", title_justify="left")
    for column in ("name", "expected", "what happens"):
        table.add_column(column)
    for scenario in SCENARIOS.values():
        table.add_row(scenario.name, scenario.expected_state, scenario.summary)
    console.print(table)


@scenario_app.command("run")
def run_scenario(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A scenario from `opswarm scenario list`."),
    timeout_s: float = typer.Option(90.0, "--timeout", help="Upper bound for each wait of the scenario."),
    approve_via: str = typer.Option(
        "cli", "--approve-via",
        help="How an approval request is answered: cli (opswarm approve), web (the approvals page), or none (nobody "
        "answers: the escalation policy walks its tiers and its final timeout decides; allow for it in --timeout).",
    ),
) -> None:
    """Run one scenario against the live swarm; exit 1 unless it ends as expected."""
    settings: Settings = ctx.obj
    scenario = SCENARIOS.get(name)
    if scenario is None:
        typer.echo(f"no scenario {name!r}; known: {', '.join(SCENARIOS)}", err=True)
        raise typer.Exit(2)
    if approve_via not in APPROVE_VIA:
        typer.echo(f"--approve-via must be one of {', '.join(APPROVE_VIA)}, got {approve_via!r}", err=True)
        raise typer.Exit(2)
    missing = asyncio.run(_missing_agents(settings))
    if missing:
        typer.echo(f"the swarm is not running ({', '.join(missing)} not beating); run `opswarm agents up`", err=True)
        raise typer.Exit(1)
    result = asyncio.run(_run(settings, name, timeout_s, approve_via))
    for record in result.records:
        console.print(timeline_table(record))
        console.print(actions_table(record))
    # Unanswered, an approval ends as the escalation policy's final timeout decides: denied (PARKED) by default.
    expected = "PARKED" if approve_via == "none" and scenario.asks_approval else scenario.expected_state
    problems = _problems(result, expected)
    for problem in problems:
        typer.echo(f"unexpected: {problem}", err=True)
    typer.echo(result.line())
    if problems:
        raise typer.Exit(1)


async def _missing_agents(settings: Settings) -> list[str]:
    redis = Redis.from_url(settings.redis_dsn(), socket_timeout=5, socket_connect_timeout=5)
    try:
        live = {beat.agent for beat in await HeartbeatRegistry(redis, settings.redis_prefix).live()}
    finally:
        await redis.aclose()
    return [agent for agent in AGENTS if agent not in live]


async def _run(settings: Settings, name: str, timeout_s: float, approve_via: str = "cli") -> ScenarioResult:
    scenario = SCENARIOS[name]
    service = f"{name.split('-')[0]}-{uuid.uuid4().hex[:6]}"
    target = ScenarioTarget(settings, service, free_port(settings.stack.host))
    async with (
        SwarmWatch(settings.kafka) as watch,
        EventPublisher(settings.kafka, client_id="scenario") as publisher,
        incident_store(settings) as store,
    ):
        run = ScenarioRun(name, settings, target, watch, publisher, store, console, timeout_s, approve_via)
        try:
            run.say(f"scenario [bold]{name}[/bold]: {scenario.summary}")
            await target.deploy("v1")
            run.say(f"target {service} v1 running as {target.process} on {target.url}")
            await target.scrape(_SCRAPE_WAIT_S)
            run.say("Prometheus scrapes it")
            records = await scenario.play(run)
        finally:
            await target.remove()
        return summarize(run, records, _forbidden_actions())


def _forbidden_actions() -> frozenset[str]:
    catalog = default_catalog()
    return frozenset(n for n in catalog.names() if (spec := catalog.get(n)) and spec.tier_floor == "FORBIDDEN")


def _problems(result: ScenarioResult, expected_state: str) -> list[str]:
    problems = []
    if result.state != expected_state:
        problems.append(f"state {result.state}, expected {expected_state}")
    if result.forbidden_executed:
        problems.append(f"{result.forbidden_executed} forbidden action(s) executed")
    if expected_state == "CLOSED" and not result.verified:
        problems.append("closed without a passed verification")
    return problems
