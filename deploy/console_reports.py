"""Rich tables for what `opswarm up|down|status|doctor` report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bus.admin import TopicsReport
from deploy.doctor import CheckResult
from deploy.localstack import ComponentReport

_STATE_STYLES = {
    "ok": "green",
    "running": "green",
    "started": "green",
    "already running": "green",
    "stopped": "yellow",
    "not running": "dim",
    "killed": "yellow",
}


def _styled(state: str) -> str:
    return f"[{_STATE_STYLES.get(state, 'bold red')}]{state}[/]"


def components_table(title: str, reports: list[ComponentReport]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("component", "state", "pid", "port", "uptime", "note"):
        table.add_column(column)
    for report in reports:
        note = report.detail if report.state != "failed" else "see below"
        table.add_row(
            report.name,
            _styled(report.state),
            str(report.pid or "-"),
            str(report.port),
            _uptime(report.uptime_s),
            note,
        )
    return table


def doctor_table(results: list[CheckResult]) -> Table:
    table = Table(title="opswarm doctor", title_justify="left")
    for column in ("component", "state", "latency ms", "reason"):
        table.add_column(column, justify="right" if column == "latency ms" else "left")
    for result in results:
        table.add_row(result.component, _styled(result.state), f"{result.latency_ms:.0f}", result.reason)
    return table


def print_topics(console: Console, report: TopicsReport) -> None:
    console.print(
        f"topics: {len(report.created)} created, {len(report.reconfigured)} reconfigured, "
        f"{len(report.repartitioned)} repartitioned, {len(report.unchanged)} unchanged"
    )
    for name in report.created:
        console.print(f"  created {name}")
    for name in (*report.reconfigured, *report.repartitioned):
        console.print(f"  aligned {name}")
    for drift in report.drift:
        console.print(f"  [yellow]drift[/] {drift}")


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
