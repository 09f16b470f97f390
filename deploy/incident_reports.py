"""How incidents look on a terminal: a list, and one incident's timeline with its risk and audit summary."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table

from knowledge.incident_store import IncidentRecord


def incidents_table(records: list[IncidentRecord]) -> Table:
    table = Table(title="incidents", title_justify="left")
    for column in ("incident", "state", "severity", "service", "title", "updated"):
        table.add_column(column)
    for r in records:
        table.add_row(r.incident_id, r.state.value, r.severity, r.service, r.title, _clock(r.updated_at))
    return table


def timeline_table(record: IncidentRecord) -> Table:
    table = Table(title=f"{record.incident_id} — {record.title} [{record.state.value}]", title_justify="left")
    for column in ("+s", "kind", "actor", "what"):
        table.add_column(column, overflow="fold")
    start = record.opened_at
    for entry in record.timeline:
        table.add_row(f"{(entry.at - start).total_seconds():6.2f}", entry.kind, entry.actor, entry.summary)
    return table


def actions_table(record: IncidentRecord) -> Table:
    table = Table(title="actions", title_justify="left")
    for column in ("action", "target", "tier", "score", "status", "approved by"):
        table.add_column(column)
    for entry in record.facts.get("actions", []):
        risk, step = entry.get("risk", {}), entry.get("step", {})
        table.add_row(
            step.get("action", "?"), step.get("target", "?"), risk.get("tier", "?"), f"{risk.get('score', 0):.2f}",
            entry.get("status", "?"), entry.get("approved_by", ""),
        )  # fmt: skip
    return table


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")
