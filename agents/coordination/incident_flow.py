"""Coordination's decisions: what each event means for its incident, written as one change (see incident_changes).

Coordination is the only writer of incident state. Incidents open diagnosing; a plan is scored step by step and
its highest tier decides: SAFE steps are approved at once, CONFIRM waits for a human's decision, FORBIDDEN is
never executed and escalates. Arbitration (a lease per resource, rate limits, circuit breakers) is asked at the
moment of approval; an incident whose resource is busy waits in line and is resumed when the holder is done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agents.coordination.approval_briefs import plan_brief
from agents.coordination.arbitrated_steps import ArbitratedSteps
from agents.coordination.escalation_flow import Escalations
from agents.coordination.incident_changes import (
    ACTOR,
    IncidentChange,
    action_entry,
    already_applied,
    close,
    commit,
    create,
    derived_id,
    escalate,
    record_llm_transcript,
    start_change,
)
from agents.coordination.plan_scoring import (
    environment_of,
    in_change_freeze,
    score_plan,
)
from bus.errors import NonRetriableError
from bus.events import (
    ActionExecuted,
    ActionFailed,
    ActionProposed,
    ActionRejected,
    AnyEvent,
    ApprovalExpired,
    DecisionRecorded,
    DiagnosisCompleted,
    DiagnosisRequested,
    EscalationNotified,
    Event,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    RemediationPlan,
    VerificationFailed,
    VerificationPassed,
)
from bus.incident_states import IncidentState as S
from execution.catalog import Catalog
from execution.risk import Environment, RiskPolicy
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.arbitration import ActionArbiter
from scheduler.escalations.policies import EscalationPolicies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinationPolicy:
    default_environment: Environment = "prod"
    risk: RiskPolicy = field(default_factory=RiskPolicy)
    change_freezes: Sequence[tuple[datetime, datetime]] = ()


class IncidentFlow:
    def __init__(
        self,
        store: IncidentStore,
        arbiter: ActionArbiter,
        catalog: Catalog,
        policy: CoordinationPolicy,
        escalations: Escalations | None = None,
    ) -> None:
        self._escalations = escalations if escalations is not None else Escalations(EscalationPolicies(), None)
        self._store = store
        self._arbiter = arbiter
        self._catalog = catalog
        self._policy = policy
        self._steps = ArbitratedSteps(store, arbiter)

    async def handle(self, event: AnyEvent) -> list[Event]:
        if event.produced_by == ACTOR and isinstance(event, IncidentUpdated):
            return []  # our own state announcements come back on the incidents topic
        if not event.incident_id:
            raise NonRetriableError(f"{event.type} without incident_id: coordination cannot place it")
        record = await self._store.get(event.incident_id)
        if isinstance(event, IncidentOpened):
            return await self._opened(event, record)
        if record is None:
            raise NonRetriableError(f"{event.type} for unknown incident {event.incident_id}")
        replay = already_applied(record, event.event_id)
        if replay is not None:
            return replay + await self._steps.resume_after(record.incident_id, record.facts.get("released"), event)
        change = start_change(record, event)
        match event:
            case IncidentUpdated():
                self._alerts_changed(change, event)
            case IncidentResolved():
                await self._alerts_resolved(change, event)
            case DiagnosisCompleted():
                await self._diagnosed(change, event)
            case DecisionRecorded():
                await self._decided(change, event)
            case EscalationNotified():
                self._escalations.notified(change, event)
            case ApprovalExpired():
                await self._escalations.expired(change, event)
            case ActionExecuted():
                await self._executed(change, event)
            case ActionFailed():
                await self._failed(change, event, event.error)
            case VerificationPassed():
                await self._verified(change, event)
            case VerificationFailed():
                await self._failed(
                    change,
                    event,
                    f"verification failed: {event.reason}",
                    rolled_back=event.rolled_back,
                )
            case _:
                return []
        outputs = await commit(self._store, change)
        return outputs + await self._steps.resume_after(record.incident_id, change.released, event)

    # ------------------------------------------------------------------ incidents

    async def _opened(self, event: IncidentOpened, record: IncidentRecord | None) -> list[Event]:
        assert event.incident_id is not None
        if record is not None:
            return already_applied(record, event.event_id) or []
        kind = event.alerts[0].alertname if event.alerts else event.title
        labels = event.alerts[0].labels if event.alerts else {}
        fresh = IncidentRecord(
            incident_id=event.incident_id, title=event.title, service=event.service, severity=event.severity,
            fingerprint=event.fingerprint, namespace=event.namespace, alerts=event.alerts,
            facts={"kind": kind, "environment": environment_of(labels, self._policy.default_environment)},
        )  # fmt: skip
        change = start_change(fresh, event)
        change.note(
            "opened",
            f"{event.title} ({event.severity}), {len(event.alerts)} alert(s)",
            event.produced_by,
        )
        change.stamp("opened", event.occurred_at.timestamp())
        breaker = await self._arbiter.breaker(event.service)
        if breaker.open:
            change.move(S.PARKED, f"automation for {event.service} is off after failed actions")
            escalate(
                change,
                f"automation for {event.service} is switched off by its circuit breaker",
            )
        else:
            change.move(S.DIAGNOSING)
            change.emit(
                event.follow(
                    DiagnosisRequested, produced_by=ACTOR, service=event.service, kind=kind,
                    severity=event.severity, namespace=event.namespace, alerts=event.alerts,
                    context={"title": event.title, "fingerprint": event.fingerprint},
                )
            )  # fmt: skip
        return await create(self._store, fresh, change)

    def _alerts_changed(self, change: IncidentChange, event: IncidentUpdated) -> None:
        if event.alerts:
            change.fields["alerts"] = [a.model_dump() for a in event.alerts]
        if event.severity:
            change.fields["severity"] = event.severity
        change.note("alerts", f"{event.reason}: {event.alert_count} alert(s)", event.produced_by)

    async def _alerts_resolved(self, change: IncidentChange, event: IncidentResolved) -> None:
        state = change.state
        if state in (S.NEW, S.DIAGNOSING, S.PLANNED, S.AWAITING_APPROVAL, S.PARKED):
            was_parked = state is S.PARKED
            await self._steps.let_go(change)
            change.move(S.RESOLVED, "every alert of the incident resolved")
            close(change, "escalated" if was_parked else "resolved_itself", verified=False)
        else:
            change.note(
                "alerts",
                f"alerts resolved while {state}: {event.summary or 'waiting for our own check'}",
            )

    # ------------------------------------------------------------------ diagnosis and decisions

    async def _diagnosed(self, change: IncidentChange, event: DiagnosisCompleted) -> None:
        if change.state is not S.DIAGNOSING:
            change.record_audit(
                "diagnosis_ignored",
                {"state": change.state.value, "hypothesis": event.hypothesis},
            )
            return
        change.stamp("diagnosed", event.occurred_at.timestamp())
        change.facts["diagnosis"] = {
            "hypothesis": event.hypothesis, "confidence": event.confidence, "method": event.method,
            "rationale": event.rationale, "evidence": [e.model_dump(mode="json") for e in event.evidence],
        }  # fmt: skip
        if event.llm is not None:
            record_llm_transcript(change, event.llm)
        change.note(
            "diagnosis",
            f"{event.hypothesis} (confidence {event.confidence:.2f}, {event.method})",
            "diagnosis",
        )
        if event.plan is None:
            change.move(S.PARKED, "no plan")
            escalate(change, f"diagnosis found no plan: {event.hypothesis}")
            return
        change.move(S.PLANNED)
        score = score_plan(
            event.plan, catalog=self._catalog, policy=self._policy.risk,
            environment=change.facts.get("environment", self._policy.default_environment),
            confidence=event.confidence, severity=change.record.severity,  # type: ignore[arg-type]
            change_freeze=in_change_freeze(datetime.now(UTC), self._policy.change_freezes),
            kind=change.facts.get("kind"), history=event.history,
        )  # fmt: skip
        actions = []
        for index, scored in enumerate(score.steps):
            action_id = derived_id(event.event_id, f"step-{index}")
            actions.append({
                "action_id": action_id, "step": scored.step.model_dump(mode="json"),
                "risk": scored.risk.model_dump(mode="json"), "status": "proposed",
            })  # fmt: skip
            change.emit(
                event.follow(
                    ActionProposed, produced_by=ACTOR, action_id=action_id, step=scored.step,
                    rollback=event.plan.rollback if index == len(score.steps) - 1 else [],
                    verify=event.plan.verify if index == len(score.steps) - 1 else None,
                    rationale=event.hypothesis,
                )
            )  # fmt: skip
            change.record_audit(
                "risk_scored",
                {
                    "action": scored.step.action,
                    "target": scored.step.target,
                    **scored.risk.model_dump(mode="json"),
                },
            )
            change.note("risk", f"{scored.step.action} on {scored.step.target}: {scored.risk.tier} "
                        f"(score {scored.risk.score:.2f}) — {'; '.join(scored.risk.reasons)}")  # fmt: skip
        change.facts.update(
            plan=event.plan.model_dump(mode="json"),
            actions=actions,
            step_index=0,
            plan_tier=score.tier,
        )
        if score.forbidden:
            for scored, entry in zip(score.steps, actions, strict=True):
                if scored.risk.tier == "FORBIDDEN":
                    entry["status"] = "forbidden"
                    change.count("forbidden_blocked")
                    change.emit(
                        event.follow(
                            ActionRejected, produced_by=ACTOR, action_id=entry["action_id"], rejected_by=ACTOR,
                            reason="; ".join(scored.risk.reasons), risk=scored.risk,
                        )
                    )  # fmt: skip
            names = ", ".join(f"{s.step.action} on {s.step.target}" for s in score.forbidden)
            change.move(S.PARKED, f"forbidden: {names}")
            escalate(change, f"the plan needs forbidden actions ({names}); nothing was executed",
                           risk=score.forbidden[0].risk, step=score.forbidden[0].step)  # fmt: skip
            return
        if score.tier == "CONFIRM":
            first = actions[0]
            change.facts["pending_action_id"] = first["action_id"]
            change.move(
                S.AWAITING_APPROVAL,
                f"plan tier CONFIRM (highest score {score.highest.score:.2f})",
            )
            first["brief"] = plan_brief(score, change.facts["diagnosis"], event.history, kind=change.facts.get("kind"))
            change.record_audit("approval_brief", {"action_id": first["action_id"], "brief": first["brief"]})
            await self._escalations.start(change, action_id=first["action_id"], risk_score=score.highest.score,
                                          requested_by=event.produced_by)  # fmt: skip
            escalate(change, f"approve {_describe(event.plan)}? risk {score.highest.tier} {score.highest.score:.2f}",
                risk=score.highest, step=score.steps[0].step, action_id=first["action_id"], needs_decision=True,
                brief=first["brief"],
            )  # fmt: skip
            return
        await self._steps.approve_step(change, 0, mode="auto", approved_by=ACTOR)

    async def _decided(self, change: IncidentChange, event: DecisionRecorded) -> None:
        pending = change.facts.get("pending_action_id")
        if change.state is not S.AWAITING_APPROVAL or (event.action_id and event.action_id != pending):
            why = self._escalations.expired_reason(change, event) or "the incident is not awaiting this decision"
            change.record_audit(
                "decision_refused",
                {"decision": event.decision, "by": event.decided_by, "state": change.state.value,
                 "action_id": event.action_id, "reason": why},
                actor=event.decided_by,
            )  # fmt: skip
            return
        refusal = self._escalations.refusal(change, event)
        if refusal is not None:
            change.record_audit("decision_refused", {"decision": event.decision, "by": event.decided_by,
                                "action_id": pending, "via": event.via, "reason": refusal}, actor=event.decided_by)
            change.note("approval", f"{event.decision} by {event.decided_by} refused: {refusal}", event.decided_by)
            return
        if self._escalations.needs_second_approver(change, event):
            return
        change.record_audit(
            "decision",
            {
                "decision": event.decision,
                "by": event.decided_by,
                "comment": event.comment,
                "action_id": pending,
                "via": event.via,
            },
            actor=event.decided_by,
        )
        change.facts.pop("pending_action_id", None)
        change.count("approvals" if event.decision == "approve" else "rejections")
        verdict = "approved" if event.decision == "approve" else "rejected"
        await self._escalations.answered(change, pending, f"{verdict} by {event.decided_by} via {event.via or 'cli'}")
        if event.decision == "reject":
            entry = action_entry(change, pending)
            entry["status"] = "rejected"
            change.emit(
                event.follow(
                    ActionRejected,
                    produced_by=ACTOR,
                    action_id=pending,
                    rejected_by=event.decided_by,
                    reason=event.comment or "rejected by a human",
                )
            )
            change.move(S.PARKED, f"rejected by {event.decided_by}")
            return
        change.note("approval", f"approved by {event.decided_by}" + (f": {event.comment}" if event.comment else ""),
                    event.decided_by)  # fmt: skip
        await self._steps.approve_step(change, change.facts.get("step_index", 0), mode="human",
                                 approved_by=event.decided_by, comment=event.comment)  # fmt: skip

    async def _executed(self, change: IncidentChange, event: ActionExecuted) -> None:
        entry = action_entry(change, event.action_id)
        if change.state is not S.EXECUTING or entry is None or entry.get("status") != "approved":
            change.record_audit(
                "execution_ignored",
                {"action_id": event.action_id, "state": change.state.value},
            )
            return
        entry["status"] = "executed"
        change.stamp("executed", event.occurred_at.timestamp())
        change.note("execution", f"{event.step.action} on {event.step.target} executed in {event.duration_ms:.0f} ms"
                    f" ({event.attempts} attempt(s))", event.produced_by)  # fmt: skip
        await self._arbiter.record_outcome(change.record.service, succeeded=True)
        index = change.facts.get("step_index", 0) + 1
        actions = change.facts["actions"]
        if index < len(actions):
            change.facts["step_index"] = index
            previous = actions[index - 1]
            await self._steps.approve_step(change, index, mode=previous.get("mode", "auto"),
                                     approved_by=previous.get("approved_by", ACTOR))  # fmt: skip
            return
        if change.facts.get("plan", {}).get("verify") is None:
            change.move(S.PARKED, "executed, but the plan has no verification")
            await self._steps.let_go(change)
            escalate(
                change,
                "the plan ran but has no verification: a human must confirm the fix",
            )
            return
        change.move(S.VERIFYING)

    async def _verified(self, change: IncidentChange, event: VerificationPassed) -> None:
        if change.state is not S.VERIFYING:
            change.record_audit(
                "verification_ignored",
                {"action_id": event.action_id, "state": change.state.value},
            )
            return
        change.facts["verified"] = True
        change.facts["verification"] = {
            "query": event.verify.query,
            "observed": event.observed,
            "comparator": event.verify.comparator,
            "threshold": event.verify.threshold,
        }
        change.note("verification", f"passed: {event.verify.query} = {event.observed:g} "
                    f"{event.verify.comparator} {event.verify.threshold:g}", event.produced_by)  # fmt: skip
        await self._steps.let_go(change)
        change.move(S.RESOLVED, "verified")
        close(change, "remediated", verified=True)

    async def _failed(
        self,
        change: IncidentChange,
        event: Event,
        error: str,
        *,
        rolled_back: bool = False,
    ) -> None:
        if change.state not in (S.EXECUTING, S.VERIFYING):
            change.record_audit(
                "failure_ignored",
                {"event": event.type, "state": change.state.value, "error": error},
            )
            return
        action_id = getattr(event, "action_id", None)
        entry = action_entry(change, action_id)
        if entry is not None:
            entry["status"] = "failed"
        breaker = await self._arbiter.record_outcome(change.record.service, succeeded=False)
        change.note(
            "failure",
            error + (" (rolled back)" if rolled_back else ""),
            event.produced_by,
        )
        await self._steps.let_go(change)
        change.move(S.PARKED, error)
        suffix = " Automation for this service is now off (circuit breaker open)." if breaker.open else ""
        escalate(
            change,
            f"{error}{' — rolled back' if rolled_back else ''}.{suffix}",
            action_id=action_id,
        )

    # ------------------------------------------------------------------ helpers


def _describe(plan: RemediationPlan) -> str:
    return ", then ".join(f"{s.action} on {s.target}" for s in plan.steps)
