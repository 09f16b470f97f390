"""A human's decision on a pending action, from the CLI, the API, the approvals page or a signed link: checked,
then put on the bus with how it came (`via`).

The check gives the human a clear answer at once (unknown incident, nothing awaiting a decision); the decision
itself travels as DecisionRecorded and coordination applies it in order with everything else, so a late or
duplicate answer is refused there too and lands in the audit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from bus.events import DecisionRecorded, Event
from bus.incident_states import IncidentState
from knowledge.incident_store import IncidentRecord, IncidentStore

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, event: Event) -> object: ...


@dataclass(frozen=True)
class DecisionRequest:
    status: Literal["accepted", "missing", "not_awaiting"]
    message: str
    action_id: str | None = None
    event_id: str | None = None


def pending_action(record: IncidentRecord) -> dict | None:
    pending = record.facts.get("pending_action_id")
    for entry in record.facts.get("actions", []):
        if entry["action_id"] == pending:
            return entry
    return None


async def request_decision(
    store: IncidentStore,
    publisher: Publisher,
    incident_id: str,
    decision: Literal["approve", "reject"],
    decided_by: str,
    comment: str = "",
    *,
    via: str = "cli",
    action_id: str | None = None,
) -> DecisionRequest:
    """Send the decision on the incident's pending action. With `action_id` (what the person was shown: a link's
    action, a page's form), only when that action is still the pending one."""
    record = await store.get(incident_id)
    if record is None:
        return DecisionRequest("missing", f"no incident {incident_id}")
    entry = pending_action(record)
    if record.state is not IncidentState.AWAITING_APPROVAL or entry is None:
        escalation = record.facts.get("escalation") or {}
        if escalation.get("expired_at") is not None:
            return DecisionRequest(
                "not_awaiting",
                f"the approval for incident {incident_id} expired after {escalation.get('waited_s', 0):g} s without "
                f"an answer (policy {escalation.get('policy')}); it is {record.state} now: decision refused",
            )
        return DecisionRequest(
            "not_awaiting",
            f"incident {incident_id} is {record.state}, not awaiting a decision",
        )
    if action_id is not None and action_id != entry["action_id"]:
        return DecisionRequest(
            "not_awaiting",
            f"action {action_id} of incident {incident_id} no longer awaits a decision "
            f"(action {entry['action_id']} does now)",
        )
    event = DecisionRecorded(
        produced_by="approvals", incident_id=incident_id, action_id=entry["action_id"], decision=decision,
        decided_by=decided_by, comment=comment, via=via,
    )  # fmt: skip
    await publisher.publish(event)
    step = entry["step"]
    log.info(
        "decision sent",
        extra={"incident_id": incident_id, "decision": decision, "by": decided_by, "via": via},
    )
    return DecisionRequest(
        "accepted",
        f"{decision} of {step['action']} on {step['target']} sent for incident {incident_id}",
        entry["action_id"],
        event.event_id,
    )
