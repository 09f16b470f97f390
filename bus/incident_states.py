"""The incident lifecycle: its states and the only transitions allowed between them.

Coordination is the only writer of incident state and asks `check_transition` before every change; a refused
transition is recorded in the incident's audit trail, never applied. The states travel in IncidentUpdated.state.

    NEW ─► DIAGNOSING ─► PLANNED ─► AWAITING_APPROVAL ─► EXECUTING ─► VERIFYING ─► RESOLVED ─► CLOSED
                              └──────────(auto-approved)──────┘              │
    any active state ─► PARKED (escalated to a human, forbidden, failed, denied) ◄───────┘ (verification failed)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class IncidentState(enum.StrEnum):
    NEW = "NEW"
    DIAGNOSING = "DIAGNOSING"
    PLANNED = "PLANNED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    EXECUTING = "EXECUTING"
    VERIFYING = "VERIFYING"
    RESOLVED = "RESOLVED"
    CLOSED = "CLOSED"
    PARKED = "PARKED"


S = IncidentState

# Why each transition exists: the audit trail and `opswarm incidents show` print these.
TRANSITIONS: dict[IncidentState, dict[IncidentState, str]] = {
    S.NEW: {
        S.DIAGNOSING: "diagnosis requested",
        S.RESOLVED: "alerts resolved before diagnosis",
        S.PARKED: "escalated before diagnosis (automation off for this service)",
    },
    S.DIAGNOSING: {
        S.PLANNED: "diagnosis proposed a plan",
        S.RESOLVED: "alerts resolved during diagnosis",
        S.PARKED: "diagnosis found no safe plan",
    },
    S.PLANNED: {
        S.AWAITING_APPROVAL: "action needs a human decision",
        S.EXECUTING: "action auto-approved",
        S.RESOLVED: "alerts resolved before acting",
        S.PARKED: "action forbidden or refused by arbitration",
    },
    S.AWAITING_APPROVAL: {
        S.EXECUTING: "action approved",
        S.RESOLVED: "alerts resolved while awaiting approval",
        S.PARKED: "action rejected or approval expired",
    },
    S.EXECUTING: {
        S.VERIFYING: "action executed, verifying",
        S.PARKED: "action failed",
    },
    S.VERIFYING: {
        S.RESOLVED: "verification passed",
        S.PARKED: "verification failed",
    },
    S.RESOLVED: {
        S.CLOSED: "incident closed",
    },
    S.PARKED: {
        S.DIAGNOSING: "a human asked for a new diagnosis",
        S.AWAITING_APPROVAL: "a human re-opened the decision",
        S.RESOLVED: "resolved by a human or the alerts cleared",
        S.CLOSED: "closed by a human",
    },
    S.CLOSED: {},
}

TERMINAL = frozenset(s for s, exits in TRANSITIONS.items() if not exits)
ACTIVE = frozenset(IncidentState) - TERMINAL - {S.RESOLVED, S.PARKED}

# Refusals worth a specific explanation; any other missing edge gets the generic one.
_WHY_NOT: dict[tuple[IncidentState, IncidentState], str] = {
    (S.NEW, S.EXECUTING): "nothing executes without a diagnosis and an approved plan",
    (S.DIAGNOSING, S.EXECUTING): "nothing executes without an approved plan",
    (S.AWAITING_APPROVAL, S.VERIFYING): "an action must execute before it is verified",
    (S.EXECUTING, S.RESOLVED): "an executed action must pass verification before the incident is resolved",
    (S.PLANNED, S.VERIFYING): "an action must execute before it is verified",
}


@dataclass(frozen=True)
class TransitionCheck:
    allowed: bool
    reason: str


def check_transition(current: IncidentState, target: IncidentState) -> TransitionCheck:
    """Whether `current → target` is allowed, and why (or why not)."""
    if current is target:
        return TransitionCheck(False, f"{current} → {target}: already {current}")
    exits = TRANSITIONS[current]
    if target in exits:
        return TransitionCheck(True, f"{current} → {target}: {exits[target]}")
    if current in TERMINAL:
        return TransitionCheck(False, f"{current} → {target}: {current} is final")
    why = _WHY_NOT.get((current, target), f"not a step of the incident lifecycle (from {current}: {_list(exits)})")
    return TransitionCheck(False, f"{current} → {target}: {why}")


def _list(exits: dict[IncidentState, str]) -> str:
    return ", ".join(str(s) for s in exits)
