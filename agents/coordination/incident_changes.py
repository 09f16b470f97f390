"""One event's change to one incident: its state path, timeline, audit, facts and the events it emits — written
in a single versioned snapshot, so applying an event is all or nothing.

The events a change emits are kept with the incident (its outbox, by causing event id). When Kafka redelivers an
event whose change is already written (the process died after the write and before the transaction committed),
the same events, with the same ids, are emitted again instead of deciding anew.
"""

from __future__ import annotations

import copy
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.codec import decode_event, encode_event
from bus.errors import RetriableError
from bus.events import (
    E,
    EscalationRaised,
    Event,
    IncidentClosed,
    IncidentUpdated,
    LlmTranscript,
    PlanStep,
    RiskAssessment,
)
from bus.incident_states import IncidentState, check_transition
from bus.incident_states import IncidentState as S
from knowledge.incident_store import (
    AuditEntry,
    IncidentRecord,
    IncidentStore,
    TimelineEntry,
)

log = logging.getLogger(__name__)

ACTOR = "coordination"
OUTBOX_KEPT = 30


@dataclass
class IncidentChange:
    """What applying one event does to one incident, built up step by step and then committed."""

    record: IncidentRecord
    cause: Event
    event_id: str  # the id the store remembers the change by (the cause's, or derived for a follow-up write)
    state: IncidentState = field(init=False)
    facts: dict[str, Any] = field(init=False)
    fields: dict[str, Any] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    outputs: list[Event] = field(default_factory=list)
    released: str | None = None  # the resource this change gave back, if any

    def __post_init__(self) -> None:
        self.state = self.record.state
        self.facts = copy.deepcopy({k: v for k, v in self.record.facts.items() if k != "outbox"})

    def move(self, target: IncidentState, why: str = "") -> bool:
        """Take one lifecycle step; a step the lifecycle refuses is recorded in the audit and not taken."""
        check = check_transition(self.state, target)
        detail = {"from": self.state.value, "to": target.value, "reason": check.reason}
        if not check.allowed:
            self.audit.append(
                AuditEntry(
                    actor=ACTOR,
                    action="transition_refused",
                    detail=detail,
                    event_id=self.event_id,
                )
            )
            log.warning(
                "transition refused",
                extra={"incident_id": self.record.incident_id, "reason": check.reason},
            )
            return False
        self.audit.append(AuditEntry(actor=ACTOR, action="transition", detail=detail, event_id=self.event_id))
        summary = check.reason if not why else f"{check.reason} — {why}"
        self.timeline.append(TimelineEntry(kind="state", summary=summary, actor=ACTOR, event_id=self.event_id))
        self.state = target
        self.emit(
            self.follow(
                IncidentUpdated,
                reason=check.reason,
                state=target,
                details={"why": why} if why else {},
            )
        )
        return True

    def follow(self, event_cls: type[E], **fields: Any) -> E:
        """An event caused by this change's cause, about this change's incident."""
        fields.setdefault("incident_id", self.record.incident_id)
        return self.cause.follow(event_cls, produced_by=ACTOR, **fields)

    def note(self, kind: str, summary: str, actor: str = ACTOR) -> None:
        self.timeline.append(TimelineEntry(kind=kind, summary=summary, actor=actor, event_id=self.event_id))

    def record_audit(self, action: str, detail: dict[str, Any], actor: str = ACTOR) -> None:
        self.audit.append(AuditEntry(actor=actor, action=action, detail=detail, event_id=self.event_id))

    def emit(self, event: Event) -> None:
        self.outputs.append(event)

    def count(self, fact: str, by: int = 1) -> None:
        self.facts[fact] = int(self.facts.get(fact, 0)) + by

    def stamp(self, moment: str, at: float) -> None:
        """Remember when something first happened (for the durations reported on close)."""
        times = dict(self.facts.get("times", {}))
        times.setdefault(moment, at)
        self.facts["times"] = times


def start_change(record: IncidentRecord, cause: Event, event_id: str | None = None) -> IncidentChange:
    return IncidentChange(record=record, cause=cause, event_id=event_id or cause.event_id)


def already_applied(record: IncidentRecord, event_id: str) -> list[Event] | None:
    """The events emitted when `event_id` was applied to the record, or None if it was not applied yet."""
    if event_id not in record.applied_event_ids:
        return None
    outbox: dict[str, list[str]] = record.facts.get("outbox", {})
    return [decode_event(raw.encode()) for raw in outbox.get(event_id, [])]


def _outbox_with(record: IncidentRecord, event_id: str, outputs: list[Event]) -> dict[str, list[str]]:
    outbox = dict(record.facts.get("outbox", {}))
    outbox[event_id] = [encode_event(e).decode() for e in outputs]
    return dict(list(outbox.items())[-OUTBOX_KEPT:])


async def commit(store: IncidentStore, change: IncidentChange) -> list[Event]:
    """Write the change as the incident's next version and return the events it emits."""
    record = change.record
    facts = {
        **change.facts,
        "outbox": _outbox_with(record, change.event_id, change.outputs),
    }
    outcome = await store.apply(
        record.incident_id,
        expected_version=record.version,
        event_id=change.event_id,
        fields={**change.fields, "state": change.state, "facts": facts},
        timeline=change.timeline,
        audit=change.audit,
    )
    if outcome.status == "applied":
        return change.outputs
    if outcome.status == "duplicate" and outcome.record is not None:
        return already_applied(outcome.record, change.event_id) or []
    # A concurrent write (or a vanished record): decide again from the newest version.
    raise RetriableError(f"incident {record.incident_id}: {outcome.status}: {outcome.reason}")


async def create(store: IncidentStore, record: IncidentRecord, change: IncidentChange) -> list[Event]:
    """Insert a new incident with the change already applied (one write)."""
    facts = {
        **change.facts,
        "outbox": {change.event_id: [encode_event(e).decode() for e in change.outputs]},
    }
    first = record.model_copy(
        update={
            "state": change.state,
            "facts": facts,
            "timeline": change.timeline,
            "audit": change.audit,
        }
    )
    outcome = await store.create(first, event_id=change.event_id)
    if outcome.status == "applied":
        return change.outputs
    existing = await store.get(record.incident_id)
    if existing is not None:
        replay = already_applied(existing, change.event_id)
        if replay is not None:
            return replay
    raise RetriableError(f"incident {record.incident_id}: {outcome.status}: {outcome.reason}")


def escalate(
    change: IncidentChange, reason: str, *, risk: RiskAssessment | None = None,
    step: PlanStep | None = None, action_id: str | None = None, needs_decision: bool = False, brief: str = "",
) -> None:  # fmt: skip
    """Tell people: an EscalationRaised (with, for a decision, the approver's `brief`, which informs only)."""
    change.count("escalations")
    change.note("escalation", reason)
    change.emit(
        change.follow(
            EscalationRaised, reason=reason,
            summary=f"{change.record.title} ({change.record.severity}) on {change.record.service}",
            risk=risk, step=step, action_id=action_id, needs_decision=needs_decision, brief=brief,
        )
    )  # fmt: skip


def record_llm_transcript(change: IncidentChange, transcript: LlmTranscript) -> None:
    """The model's conversation with the incident (for `opswarm incidents show --llm`), and the audit's summary of
    it: how it ended and why, its tokens, and what the guardrails refused."""
    change.facts.setdefault("llm", []).append(transcript.model_dump(mode="json"))
    change.record_audit("llm_" + transcript.purpose, {
        "model": transcript.model, "status": transcript.status, "reason": transcript.reason,
        "prompt_tokens": transcript.prompt_tokens, "completion_tokens": transcript.completion_tokens,
        "model_calls": transcript.model_calls, "tool_calls": transcript.tool_calls,
        "duration_s": transcript.duration_s,
    }, actor=transcript.purpose)  # fmt: skip
    if transcript.refusals:
        change.record_audit("llm_refused", {"model": transcript.model, "refused": transcript.refusals,
                                            "nothing_executed": True}, actor=transcript.purpose)  # fmt: skip


def close(change: IncidentChange, outcome: Any, *, verified: bool) -> None:
    now = datetime.now(UTC).timestamp()
    change.stamp("resolved", now)
    if not change.move(S.CLOSED):
        return
    times = change.facts.get("times", {})
    opened = times.get("opened", now)
    durations = {f"to_{name}_s": round(at - opened, 3) for name, at in times.items() if name != "opened"}
    diagnosis = change.facts.get("diagnosis", {})
    steps = [PlanStep.model_validate(a["step"]) for a in change.facts.get("actions", [])
             if a.get("status") in ("executed", "approved")]  # fmt: skip
    change.facts["outcome"] = outcome
    change.emit(
        change.follow(
            IncidentClosed, outcome=outcome,
            title=change.record.title, service=change.record.service, kind=change.facts.get("kind"),
            severity=change.record.severity, alerts=change.record.alerts,
            hypothesis=diagnosis.get("hypothesis"), actions=steps, verified=verified, durations_s=durations,
            summary=f"{outcome}: {change.record.title}",
        )
    )  # fmt: skip


def action_entry(change: IncidentChange, action_id: str | None) -> dict[str, Any] | None:
    for entry in change.facts.get("actions", []):
        if entry["action_id"] == action_id:
            return entry
    return None


def derived_id(event_id: str, purpose: str) -> str:
    """A stable id for something an event causes: the same on every redelivery of the event."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"opswarm:{event_id}:{purpose}"))
