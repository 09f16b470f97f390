"""Approving a plan step through arbitration, and handing a released resource to the incident waiting for it.

An approval is asked of arbitration first: a busy resource puts the incident in line (it keeps its state and
waits), a rate limit or an open circuit breaker refuses the step and escalates, and a granted one is approved
with the plan's verify and rollback on its last step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agents.coordination.incident_changes import (
    ACTOR,
    IncidentChange,
    already_applied,
    commit,
    derived_id,
    escalate,
    start_change,
)
from bus.events import (
    ActionApproved,
    ActionRejected,
    Event,
    PlanStep,
    RemediationPlan,
    RiskAssessment,
)
from bus.incident_states import IncidentState as S
from knowledge.incident_store import IncidentStore
from scheduler.arbitration import ActionArbiter, waiting_priority


class ArbitratedSteps:
    def __init__(self, store: IncidentStore, arbiter: ActionArbiter) -> None:
        self._store = store
        self._arbiter = arbiter

    async def approve_step(
        self,
        change: IncidentChange,
        index: int,
        *,
        mode: str,
        approved_by: str,
        comment: str = "",
    ) -> None:
        """Ask arbitration, then approve plan step `index` (or wait in line, or escalate)."""
        actions = change.facts["actions"]
        entry = actions[index]
        step = PlanStep.model_validate(entry["step"])
        risk = RiskAssessment.model_validate(entry["risk"])
        admission = await self._arbiter.admit(
            incident_id=change.record.incident_id, action_id=entry["action_id"], action=step.action,
            resource=step.target, service=change.record.service,
        )  # fmt: skip
        change.record_audit(
            "arbitration",
            {
                "action": step.action,
                "target": step.target,
                "status": admission.status,
                "reason": admission.reason,
            },
        )
        if admission.status == "busy":
            change.facts["waiting"] = {
                "resource": step.target,
                "holder": admission.holder,
                "index": index,
                "mode": mode,
                "approved_by": approved_by,
                "comment": comment,
            }
            change.note("arbitration", f"waiting: {admission.reason}")
            priority = waiting_priority(change.record.severity, risk.score, self._arbiter.now())
            await self._arbiter.wait_for(step.target, change.record.incident_id, priority)
            return
        if admission.status != "granted":
            entry["status"] = "refused"
            change.emit(
                change.follow(
                    ActionRejected,
                    action_id=entry["action_id"],
                    rejected_by=ACTOR,
                    reason=admission.reason,
                    risk=risk,
                )
            )
            change.move(S.PARKED, admission.reason)
            escalate(
                change,
                admission.reason,
                risk=risk,
                step=step,
                action_id=entry["action_id"],
            )
            return
        change.facts.pop("waiting", None)
        change.facts["resource"] = step.target
        entry.update(status="approved", mode=mode, approved_by=approved_by)
        change.count("actions_approved")
        last = index == len(actions) - 1
        plan = RemediationPlan.model_validate(change.facts["plan"])
        change.stamp("approved", datetime.now(UTC).timestamp())
        change.emit(
            change.follow(
                ActionApproved, action_id=entry["action_id"], step=step, approved_by=approved_by,
                mode=mode, risk=risk, idempotency_key=f"{change.record.incident_id}/{entry['action_id']}",
                comment=comment, rollback=plan.rollback if last else [], verify=plan.verify if last else None,
            )
        )  # fmt: skip
        if change.state is not S.EXECUTING:
            change.move(
                S.EXECUTING,
                f"{step.action} on {step.target} approved ({mode}, by {approved_by})",
            )

    # ------------------------------------------------------------------ execution and verification

    async def let_go(self, change: IncidentChange) -> None:
        """Give back the resource the incident holds, and leave any line it waits in."""
        resource = change.facts.pop("resource", None)
        if resource:
            await self._arbiter.release(resource, change.record.incident_id)
            change.facts["released"] = resource  # kept: a redelivery of this event hands the resource on again
            change.released = resource
        change.facts.pop("waiting", None)

    async def resume_after(self, incident_id: str, resource: str | None, event: Event) -> list[Event]:
        """Once an incident let go of `resource`, hand it to the first incident waiting for it."""
        if not resource or await self._arbiter.holder(resource):
            return []
        outputs: list[Event] = []
        while (waiting_id := await self._arbiter.next_waiting(resource)) is not None:
            waiting = await self._store.get(waiting_id)
            if waiting is None or "waiting" not in waiting.facts:
                continue
            resume_id = derived_id(event.event_id, f"resume-{waiting_id}")
            replay = already_applied(waiting, resume_id)
            if replay is not None:
                outputs.extend(replay)
                break
            change = start_change(waiting, event, resume_id)
            plan = change.facts["waiting"]
            change.note(
                "arbitration",
                f"{resource} is free again (released by incident {incident_id})",
            )
            await self.approve_step(change, plan["index"], mode=plan["mode"], approved_by=plan["approved_by"],
                                     comment=plan.get("comment", ""))  # fmt: skip
            outputs.extend(await commit(self._store, change))
            break
        return outputs
