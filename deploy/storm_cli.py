"""`opswarm storm`: an alert storm against the running swarm, accounted to the last alert.

It sends a seeded, realistic alert mix (services over service groups, repeats, flaps, resolves, cascades) at a
target rate, through the bridge (Alertmanager webhooks over HTTP) or straight to Kafka, and reads monitoring's
AlertsTriaged verdicts from the triage topic: every alert sent must come out opened, merged, duplicate or
suppressed. Latency is alert sent → its verdict observed, which is also when its incident event became visible
(the same Kafka transaction). A progress line on stderr while it runs, then the breakdown, a PNG of throughput
and latency (default `<state_dir>/storm/<run_id>.png`) and last:

    storm: sent=N accounted=N lost=N alerts_per_s=N p50_ms=N p99_ms=N incidents=N

Exit 1 when alerts were lost or a record got two verdicts (it says why), 2 on bad arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import typer
import uvloop
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bus.lifecycle import tune_collector_for_throughput
from deploy.localstack.bridge_token import read_token
from deploy.settings import Settings
from deploy.storm.storm_run import (
    DEFAULT_DURATION_S,
    StormConfig,
    StormFailed,
    StormProgress,
    StormReport,
    kinds_line,
    run_storm,
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
PLAIN_PROGRESS_EVERY_S = 5.0


def storm(
    ctx: typer.Context,
    rate: float = typer.Option(2000.0, "--rate", help="Target alerts per second; 0: as fast as they are accepted."),
    duration: float | None = typer.Option(None, "--duration", help="Seconds of sending (default 10, unless --alerts)."),
    alerts: int | None = typer.Option(None, "--alerts", help="Send exactly this many alerts (instead of --duration)."),
    services: int = typer.Option(200, "--services", help="Services alerting."),
    groups: int = typer.Option(20, "--groups", help="Service groups (namespaces) the services are spread over."),
    via: str = typer.Option("bridge", "--via", help="bridge: Alertmanager webhooks over HTTP; kafka: straight to "
                            "the alerts topic (the same events the bridge would publish)."),
    batch: int = typer.Option(100, "--batch", help="Alerts per webhook body (Kafka: per batch of events)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests (or Kafka batches) in flight at most."),
    window: int = typer.Option(20_000, "--window", help="Alerts sent but not yet accounted, at most (closed loop)."),
    drain_timeout: float = typer.Option(60.0, "--drain-timeout", help="Give up waiting for verdicts after this many "
                                        "seconds without a new one."),
    seed: int = typer.Option(1, "--seed", help="Seed of the alert mix."),
    plot: Path | None = typer.Option(None, "--plot", help="Where the PNG goes (default <state_dir>/storm/<run>.png)."),
    bridge_url: str | None = typer.Option(None, "--bridge-url", help="The bridge (default: the local stack's)."),
) -> None:
    """Send an alert storm; account for every alert (opened, merged, duplicate, suppressed); exit 1 if any is lost."""
    settings = ctx.find_object(Settings)
    assert settings is not None, "deploy.cli.main passes the Settings as the context object"
    try:
        config = StormConfig(
            rate=rate, duration_s=duration, alerts=alerts, services=services, groups=groups, via=via, batch=batch,
            concurrency=concurrency, window=window, drain_timeout_s=drain_timeout, seed=seed,
        )  # type: ignore[arg-type]  # fmt: skip
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            option = f"--{str(error['loc'][0]).removesuffix('_s').replace('_', '-')}: " if error["loc"] else ""
            typer.echo(f"storm: {option}{str(error['msg']).removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None
    config = config.model_copy(update={"plot_path": plot or settings.state_dir / "storm" / f"{config.run_id}.png"})
    token = _bridge_token(settings) if config.via == "bridge" else None
    url = bridge_url or settings.bridge_url()
    try:
        report = _run(config, settings, url, token)
    except StormFailed as exc:
        typer.echo(f"storm: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("storm: interrupted", err=True)
        raise typer.Exit(130) from None
    console.print(_breakdown(report))
    problems = report.problems()
    for problem in problems:
        typer.echo(f"storm: failed: {problem}", err=True)
    typer.echo(report.line())
    if report.totals.lost or report.totals.doubled:
        raise typer.Exit(1)


def _bridge_token(settings: Settings) -> str:
    if settings.bridge.token is not None and settings.bridge.token.get_secret_value().strip():
        return settings.bridge.token.get_secret_value().strip()
    try:
        return read_token(settings.state_dir)
    except ValueError as exc:
        typer.echo(f"storm: {exc} (run `opswarm up`, or set OPSWARM_BRIDGE__TOKEN)", err=True)
        raise typer.Exit(1) from None


def _run(config: StormConfig, settings: Settings, url: str, token: str | None) -> StormReport:
    where = url if config.via == "bridge" else settings.kafka.bootstrap_servers
    err_console.print(f"storm {config.run_id}: {config.services} services in {config.groups} groups via "
                      f"{config.via} ({where}), {_amount(config)} at {_rate(config.rate)}")  # fmt: skip
    if not err_console.is_terminal:  # a log, not a screen: a progress line every few seconds
        return _run_storm(config, settings, url, token, _every(PLAIN_PROGRESS_EVERY_S, _print_progress))
    with Live(Text("starting"), console=err_console, auto_refresh=False, transient=False) as live:
        return _run_storm(config, settings, url, token, lambda p: live.update(_progress_text(p), refresh=True))


def _run_storm(
    config: StormConfig, settings: Settings, url: str, token: str | None, show: Callable[[StormProgress], None]
) -> StormReport:
    # uvloop: the storm spends most of its CPU in the event loop and HTTP.
    tune_collector_for_throughput()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_storm(config, settings.kafka, url, token, show))


def _every(seconds: float, show: Callable[[StormProgress], None]) -> Callable[[StormProgress], None]:
    """`show`, at most once per `seconds` of the storm (and the last word of each phase)."""
    shown: dict[str, float] = {}

    def maybe_show(progress: StormProgress) -> None:
        last = shown.get(progress.phase)
        if last is None or progress.elapsed_s - last >= seconds:
            shown[progress.phase] = progress.elapsed_s
            show(progress)

    return maybe_show


def _print_progress(progress: StormProgress) -> None:
    err_console.print(_progress_text(progress))


def _progress_text(progress: StormProgress) -> Text:
    p99 = "-" if progress.p99_ms is None else f"{progress.p99_ms:,.0f} ms"
    return Text(
        f"{progress.phase:<8} {progress.elapsed_s:6.1f} s  sent {progress.sent:>9,}  accounted {progress.accounted:>9,}"
        f"  in flight {progress.in_flight:>7,}  {progress.alerts_per_s:>8,.0f} alerts/s  p99 {p99}"
    )


def _breakdown(report: StormReport) -> Table:
    totals = report.totals
    table = Table(title=f"storm {report.run_id} via {report.via}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    rows = [
        ("sent", f"{totals.sent:,}  ({kinds_line(report.sent_by_kind)})"),
        ("accounted", f"{totals.accounted:,}  (" + " ".join(f"{k}={v}" for k, v in totals.kinds.items()) + ")"),
        ("lost", f"{totals.lost:,}" + ("" if report.drained else "  (stopped waiting: the drain timed out)")),
        ("incidents opened", f"{totals.incidents:,}"),
        ("doubled records", f"{totals.doubled:,}" + "".join(f"  p{p}@{o} {e}" for p, o, e in totals.doubled_examples)),
        ("surplus verdicts", f"{totals.surplus:,}  (beyond the sends of their event id: retried requests)"),
        ("other senders' verdicts", f"{totals.foreign:,}"),
        ("bridge retries", f"{report.retries:,}"),
        ("sending", f"{report.send_seconds:.1f} s, {report.send_rate:,.0f} alerts/s"),
        ("end to end", f"{report.accounted_seconds:.1f} s to the last outcome, {report.alerts_per_s:,.0f} alerts/s"),
        ("latency p50 / p99", f"{_ms(totals.p50_ms)} / {_ms(totals.p99_ms)}  (alert sent → verdict = incident event)"),
        ("groups", f"{len(report.namespaces)}: {', '.join(report.namespaces[:3])}" + (", ..." if len(report.namespaces)
                                                                                       > 3 else "")),
        ("triage records read", f"{report.triage_records:,}"),
        ("plot", str(report.plot_path) if report.plot_path else f"not written: {report.plot_error or '-'}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def _amount(config: StormConfig) -> str:
    if config.alerts is not None:
        return f"{config.alerts:,} alerts"
    return f"{config.duration_s or DEFAULT_DURATION_S:g} s"


def _rate(rate: float) -> str:
    return "full speed" if rate == 0 else f"{rate:,.0f} alerts/s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"
