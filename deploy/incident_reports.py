"""How incidents look on a terminal: a list, and one incident's timeline with its risk and audit summary, and the
approver's brief of an action that awaits (or awaited) a human's decision."""

from __future__ import annotations

from datetime import datetime

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agents.coordination.approval_briefs import one_line
from bus.incident_states import IncidentState
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


def approval_panel(record: IncidentRecord) -> Panel | None:
    """The approver's brief of the incident's action that awaits or awaited a decision, and where that stands; None
    when no action asked for one. The brief is shown as plain text: markup in it is not interpreted."""
    entry = next((e for e in record.facts.get("actions", []) if e.get("brief")), None)
    if entry is None:
        return None
    step = entry.get("step", {})
    action = f"{step.get('action', '?')} on {step.get('target', '?')}"
    return Panel(
        Text(entry["brief"]), title=Text(f"approval brief — {action}"), title_align="left",
        subtitle=Text(_decided(record, entry)), subtitle_align="left",
    )  # fmt: skip


def _decided(record: IncidentRecord, entry: dict) -> str:
    """Where the decision on the action `entry` stands."""
    action_id = entry["action_id"]
    decision = next(
        (a.detail for a in reversed(record.audit) if a.action == "decision" and a.detail.get("action_id") == action_id),
        None,
    )
    if decision is not None:
        verb = {"approve": "approved", "reject": "rejected"}.get(decision.get("decision"), "decided")
        said = f": {one_line(decision['comment'], 200)}" if decision.get("comment") else ""
        return f"{verb} by {one_line(decision.get('by', '?'), 100)}{said}"
    if record.state is IncidentState.AWAITING_APPROVAL and record.facts.get("pending_action_id") == action_id:
        return f"awaiting a decision: opswarm approve|reject {record.incident_id}"
    return f"no decision recorded (action {entry.get('status', '?')})"


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")
