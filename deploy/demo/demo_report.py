"""What the demo measured: one outcome per fault, a table, and the last line of figures.

- mttr: from the fault's injection to the incident's end (closed or parked), in seconds.
- swarm share: from the first AlertReceived of the incident's service to the first ActionExecuted of the
  incident (the part of the MTTR that is the swarm's, not Prometheus's and Alertmanager's).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rich.table import Table


@dataclass(frozen=True)
class FaultOutcome:
    fault: str
    service: str
    incident_id: str | None
    state: str  # CLOSED, PARKED, or what went wrong ("TIMEOUT")
    outcome: str  # remediated | escalated | failed
    expected: str
    actions: int
    approvals: int
    verified: bool
    mttr_s: float | None
    swarm_share_s: float | None
    detail: str = ""
    runbook: str | None = None  # the runbook diagnosis cited first (its file name)

    @property
    def as_designed(self) -> bool:
        return self.outcome == self.expected


def outcome_of(state: str, verified: bool, executed_forbidden: int) -> str:
    if executed_forbidden:
        return "failed"
    if state == "CLOSED" and verified:
        return "remediated"
    if state == "PARKED":
        return "escalated"
    return "failed"


def outcomes_table(outcomes: list[FaultOutcome]) -> Table:
    table = Table(title="demo: incidents", title_justify="left")
    for column in ("fault", "service", "incident", "state", "outcome", "actions", "approvals", "verified", "mttr s",
                   "swarm s", "runbook", "as designed"):  # fmt: skip
        table.add_column(column)
    for o in outcomes:
        table.add_row(
            o.fault, o.service, o.incident_id or "-", o.state, o.outcome, str(o.actions), str(o.approvals),
            "yes" if o.verified else "no", _seconds(o.mttr_s), _seconds(o.swarm_share_s), o.runbook or "-",
            "yes" if o.as_designed else f"no (expected {o.expected}){': ' + o.detail if o.detail else ''}",
        )  # fmt: skip
    return table


def demo_line(outcomes: list[FaultOutcome]) -> str:
    mttrs = [o.mttr_s for o in outcomes if o.outcome == "remediated" and o.mttr_s is not None]
    shares = [o.swarm_share_s for o in outcomes if o.swarm_share_s is not None]
    return (
        f"demo: faults={len(outcomes)} remediated={sum(o.outcome == 'remediated' for o in outcomes)} "
        f"escalated={sum(o.outcome == 'escalated' for o in outcomes)} mttr_s_p50={_p50(mttrs)} "
        f"swarm_share_s_p50={_p50(shares)} verified={sum(o.verified for o in outcomes)}"
    )


def _p50(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "n/a"


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"
