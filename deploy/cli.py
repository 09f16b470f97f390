"""The `opswarm` command line. Settings and logging are set up once in `main`; each command is a thin call
into the module that does the work."""

from __future__ import annotations

import asyncio

import typer
from pydantic import ValidationError
from rich.console import Console

from bus.process_logging import configure_logging
from deploy import localstack
from deploy.agents_cli import agents_app
from deploy.bridge_cli import bridge
from deploy.console_reports import components_table, doctor_table, print_topics
from deploy.demo_cli import demo
from deploy.doctor import run_doctor, summary_line
from deploy.escalations_cli import escalations_app
from deploy.incidents_cli import decision_command, incidents_app
from deploy.kb_cli import kb_app
from deploy.scenario_cli import scenario_app
from deploy.settings import Settings
from deploy.storm_cli import storm

app = typer.Typer(no_args_is_help=True, add_completion=False, help="opswarm: a self-healing operations swarm.")
console = Console(highlight=False)
app.add_typer(agents_app, name="agents")
app.add_typer(incidents_app, name="incidents")
app.add_typer(scenario_app, name="scenario")
app.add_typer(kb_app, name="kb")
app.add_typer(escalations_app, name="escalations")
app.command("approve")(decision_command("approve"))
app.command("reject")(decision_command("reject"))
app.command("bridge")(bridge)
app.command("demo")(demo)
app.command("storm")(storm)


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings), "main() passes the Settings as the context object"
    return settings


@app.command()
def up(
    ctx: typer.Context,
    topics_only: bool = typer.Option(
        False, "--topics-only", help="Only create/align the topics on the configured Kafka (e.g. docker compose)."
    ),
) -> None:
    """Start the local stack (Kafka, Redis, FerretDB, Prometheus) if it is not running, then align the topics."""
    settings = _settings(ctx)
    if topics_only:
        print_topics(console, asyncio.run(localstack.ensure_bus_topics(settings)))
        return
    report = asyncio.run(localstack.up(settings))
    console.print(components_table(f"opswarm up ({settings.state_dir})", report.components))
    if report.topics is not None:
        print_topics(console, report.topics)
    if not report.ok:
        for component in report.components:
            if component.state == "failed":
                typer.echo(f"{component.name} failed: {component.detail}", err=True)
        if report.topics_error:
            typer.echo(report.topics_error, err=True)
        raise typer.Exit(1)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the local stack's processes (only those our pid files name)."""
    settings = _settings(ctx)
    reports = asyncio.run(localstack.down(settings))
    console.print(components_table(f"opswarm down ({settings.state_dir})", reports))


@app.command()
def status(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Exit 1 unless every component is running."),
) -> None:
    """Show each component of the local stack: running or stopped, pid, port, uptime."""
    settings = _settings(ctx)
    reports = localstack.status(settings)
    console.print(components_table(f"opswarm status ({settings.state_dir})", reports))
    if check and any(r.state != "running" for r in reports):
        raise typer.Exit(1)


@app.command()
def doctor(ctx: typer.Context) -> None:
    """A real round trip through Kafka, Redis, MongoDB and Qdrant; exit 1 if any fails."""
    results = asyncio.run(run_doctor(_settings(ctx)))
    console.print(doctor_table(results))
    for result in results:
        if not result.ok:
            typer.echo(f"{result.component}: {result.state}: {result.reason}")
    typer.echo(summary_line(results))
    if not all(result.ok for result in results):
        raise typer.Exit(1)


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        typer.echo(f"opswarm: invalid settings (OPSWARM_* environment variables):\n{exc}", err=True)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, quiet_clients=True)
    app(obj=settings)


if __name__ == "__main__":
    main()
