"""The escalation side of coordination's incident flow: which policy asks whom, the durable steps it schedules, and
how answers and silence are applied.

When a plan waits for a human, `start` picks the policy for the incident's service and severity, remembers it in
the incident's facts (policy, tiers, four-eyes, requester) and schedules every step of it (each tier's message,
its reminders, the final timeout) as durable timers whose ids are derived from the step: scheduling again after a
redelivery or a restart neither loses nor doubles a step. The escalation loop fires them and reports back with
EscalationNotified and ApprovalExpired, which `notified` and `expired` write into the timeline and the audit.

`refusal` says why a decision cannot be applied: the approval expired, a requester approving its own request, or
the same person approving twice under four-eyes. `needs_second_approver` records a first approval when four-eyes
asks for two different approvers.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.coordination.incident_changes import IncidentChange, action_entry
from bus.events import ActionRejected, ApprovalExpired, DecisionRecorded, EscalationNotified
from bus.incident_states import IncidentState as S
from scheduler.clock import Clock, WallClock
from scheduler.escalations.policies import EscalationPolicies, escalation_steps, four_eyes_needed, step_id
from scheduler.timers import DurableTimers

log = logging.getLogger(__name__)

POLICY_ACTOR = "escalation-policy"


class Escalations:
    def __init__(
        self, policies: EscalationPolicies, timers: DurableTimers | None, clock: Clock | None = None
    ) -> None:
        self.policies = policies
        self._timers = timers
        self._clock = clock or WallClock()

    async def start(
        self, change: IncidentChange, *, action_id: str, risk_score: float, requested_by: str
    ) -> dict[str, Any]:
        """Remember the policy for the pending action and schedule its steps; the facts kept (for the audit)."""
        record = change.record
        policy = self.policies.policy_for(record.service, record.severity)
        started_at = self._clock.now()
        facts = {
            "policy": policy.name, "action_id": action_id, "started_at": started_at,
            "tiers": [tier.name for tier in policy.tiers], "on_final_timeout": policy.on_final_timeout,
            "four_eyes": four_eyes_needed(policy, risk_score), "requested_by": requested_by,
            "requester_may_approve": policy.requester_may_approve, "approvals": [],
        }  # fmt: skip
        change.facts["escalation"] = facts
        steps = escalation_steps(policy, started_at)
        if self._timers is not None:
            for step in steps:
                payload = {"incident_id": record.incident_id, "action_id": action_id, "policy": policy.name,
                           "kind": step.kind, "tier": step.tier, "reminder": step.reminder}  # fmt: skip
                await self._timers.schedule(step_id(record.incident_id, action_id, step), step.at, payload)
        change.record_audit("escalation_started", {**facts, "steps": len(steps)})
        tiers = " → ".join(f"{t.name} ({t.timeout_s:g} s)" for t in policy.tiers)
        four_eyes = "; four-eyes: two different approvers" if facts["four_eyes"] else ""
        change.note("escalation", f"policy {policy.name}: {tiers}; then {policy.on_final_timeout}{four_eyes}")
        return facts

    def expired_reason(self, change: IncidentChange, event: DecisionRecorded) -> str | None:
        """For a decision on an action whose approval expired: that, in words; None otherwise."""
        facts = change.facts.get("escalation")
        if not facts or facts.get("expired_at") is None:
            return None
        if event.action_id is not None and event.action_id != facts.get("action_id"):
            return None
        return f"the approval expired after {facts.get('waited_s', 0):g} s without an answer; decision refused"

    def refusal(self, change: IncidentChange, event: DecisionRecorded) -> str | None:
        """Why this decision cannot be applied to the pending action, or None."""
        facts = change.facts.get("escalation")
        if not facts or facts.get("action_id") != change.facts.get("pending_action_id"):
            return None
        if facts.get("expired_at") is not None:
            return f"the approval expired after {facts.get('waited_s', 0):g} s without an answer; decision refused"
        if event.decision != "approve":
            return None
        if event.decided_by == facts.get("requested_by") and not facts.get("requester_may_approve"):
            return f"{event.decided_by} requested this action and cannot approve its own request"
        if facts.get("four_eyes") and event.decided_by in facts.get("approvals", []):
            return f"{event.decided_by} approved already; four-eyes needs a second, different approver"
        return None

    def needs_second_approver(self, change: IncidentChange, event: DecisionRecorded) -> bool:
        """Under four-eyes, record this approval; True while it is the first (the action keeps waiting)."""
        facts = change.facts.get("escalation")
        if not facts or not facts.get("four_eyes") or event.decision != "approve":
            return False
        approvals = [*facts.get("approvals", []), event.decided_by]
        facts["approvals"] = approvals
        if len(approvals) >= 2:
            change.note("approval", f"second approval by {event.decided_by} (four-eyes: {', '.join(approvals)})",
                        event.decided_by)  # fmt: skip
            return False
        change.record_audit("approval_partial", {"by": event.decided_by, "comment": event.comment, "of": 2,
                                                 "via": event.via}, actor=event.decided_by)  # fmt: skip
        change.note("approval", f"approval 1 of 2 by {event.decided_by}: four-eyes needs a second, different "
                    "approver", event.decided_by)  # fmt: skip
        return True

    async def answered(self, change: IncidentChange, action_id: str | None, outcome: str) -> None:
        """The decision is made (or denied by the policy): tell the tiers that were asked, so that their pages and
        messages close (a PagerDuty incident resolves). A step of its own, durable like the others."""
        facts = change.facts.get("escalation")
        if not facts or facts.get("action_id") != action_id or facts.get("closed"):
            return
        facts["closed"] = outcome
        asked = sorted(set(facts.get("asked_tiers", [])))
        if self._timers is None or not asked:
            return
        payload = {"incident_id": change.record.incident_id, "action_id": action_id, "policy": facts["policy"],
                   "kind": "resolve", "tier": max(asked), "reminder": 0, "tiers": asked, "outcome": outcome}  # fmt: skip
        timer_id = f"esc:{change.record.incident_id}:{action_id}:resolve"
        await self._timers.schedule(timer_id, self._clock.now(), payload)

    def notified(self, change: IncidentChange, event: EscalationNotified) -> None:
        if event.resolved:
            told = "; ".join(f"{d.channel} {d.status}" for d in event.deliveries) or "no channel"
            change.note("notification", f"told {event.tier} the request is closed: {told}", POLICY_ACTOR)
            change.record_audit("escalation_resolved", {"tier": event.tier, "deliveries": [
                d.model_dump(mode="json") for d in event.deliveries]}, actor=POLICY_ACTOR)  # fmt: skip
            return
        facts = change.facts.get("escalation")
        if facts is not None and facts.get("action_id") == event.action_id:
            facts["asked_tiers"] = sorted({*facts.get("asked_tiers", []), event.tier_index})
        pending = change.state is S.AWAITING_APPROVAL and change.facts.get("pending_action_id") == event.action_id
        detail = {
            "policy": event.policy, "tier": event.tier, "tier_index": event.tier_index, "reminder": event.reminder,
            "recipients": event.recipients, "deliveries": [d.model_dump(mode="json") for d in event.deliveries],
            "pending": pending,
        }  # fmt: skip
        change.record_audit("escalation_notified", detail, actor=POLICY_ACTOR)
        if event.reminder:
            what = f"reminder {event.reminder} to {event.tier}"
        elif event.tier_index:
            what = f"escalated to tier {event.tier_index + 1}, {event.tier}"
        else:
            what = f"asked tier 1, {event.tier}"
        who = f" ({', '.join(event.recipients)})" if event.recipients else ""
        change.note("escalation", f"{what}{who}", POLICY_ACTOR)
        for delivery in event.deliveries:
            if delivery.status == "delivered":
                said = f"{event.tier} via {delivery.channel}: delivered after {delivery.attempts} attempt(s)"
            else:
                said = f"{event.tier} via {delivery.channel}: failed after {delivery.attempts} attempt(s): " \
                       f"{delivery.error}"  # fmt: skip
            change.note("notification", said, POLICY_ACTOR)
        if not event.deliveries:
            change.note("notification", f"{event.tier}: no channel configured; the approvals page shows it",
                        POLICY_ACTOR)  # fmt: skip

    async def expired(self, change: IncidentChange, event: ApprovalExpired) -> None:
        facts = change.facts.get("escalation")
        pending = change.facts.get("pending_action_id")
        if change.state is not S.AWAITING_APPROVAL or pending != event.action_id or not facts:
            change.record_audit("expiry_ignored", {"action_id": event.action_id, "state": change.state.value},
                                actor=POLICY_ACTOR)  # fmt: skip
            return
        change.record_audit("approval_expired", {"policy": event.policy, "waited_s": event.waited_s,
                                                 "outcome": event.outcome, "action_id": pending}, actor=POLICY_ACTOR)
        tiers = ", ".join(facts.get("tiers", []))
        if event.outcome == "keep_waiting":
            facts.update(tiers_exhausted_at=event.occurred_at.timestamp())
            change.note("escalation", f"no answer from {tiers} within {event.waited_s:.0f} s; the policy keeps the "
                        "action waiting, no tier is asked any more", POLICY_ACTOR)  # fmt: skip
            return
        facts.update(expired_at=event.occurred_at.timestamp(), waited_s=round(event.waited_s, 1))
        reason = f"nobody answered within {event.waited_s:.0f} s (tiers {tiers}): denied by policy {event.policy}"
        change.note("escalation", reason, POLICY_ACTOR)
        await self.answered(change, pending, f"denied by policy {event.policy}: nobody answered")
        entry = action_entry(change, pending)
        if entry is not None:
            entry["status"] = "rejected"
        change.facts.pop("pending_action_id", None)
        change.count("rejections")
        change.emit(change.follow(ActionRejected, action_id=pending, rejected_by=POLICY_ACTOR, reason=reason))
        change.move(S.PARKED, f"denied: {reason}")
