"""Coordination's decisions on real MongoDB-wire and Redis: lifecycle, risk tiers, arbitration, idempotency."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from rich.console import Console

from agents.coordination.approval_briefs import CLOSING, MAX_BRIEF_CHARS
from agents.coordination.approvals_http import approvals_router
from agents.coordination.incident_flow import CoordinationPolicy, IncidentFlow
from bus import events as ev
from bus.incident_states import IncidentState as S
from deploy.incident_reports import approval_panel
from execution.catalog import default_catalog
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.arbitration import ActionArbiter, ArbitrationPolicy, RateLimitRule
from scheduler.escalations.access_tokens import ApiToken, token_sha256

pytestmark = pytest.mark.integration
TESTS = "tests"


@pytest.fixture
def flow(incident_store: IncidentStore, redis_client: Redis, key_prefix: str) -> IncidentFlow:
    policy = ArbitrationPolicy(
        rate_limits={"restart_process": RateLimitRule(limit=3, window_s=3600)},
        breaker_threshold=2,
    )
    return IncidentFlow(
        incident_store,
        ActionArbiter(redis_client, key_prefix, policy),
        default_catalog(),
        CoordinationPolicy(),
    )


def _opened(service: str, alertname: str = "ServiceDown", severity: str = "critical") -> ev.IncidentOpened:
    alert = ev.AlertRef(fingerprint=uuid.uuid4().hex[:16], alertname=alertname, status="firing",
                        labels={"alertname": alertname, "service": service, "env": "dev"})  # fmt: skip
    return ev.IncidentOpened(
        produced_by="monitoring", incident_id=f"inc-{uuid.uuid4().hex[:10]}", fingerprint=alert.fingerprint,
        title=f"{alertname} on {service}", service=service, severity=severity, alerts=[alert],
    )  # fmt: skip


def _verify(service: str) -> ev.VerifySpec:
    return ev.VerifySpec(
        query=f'min(up{{service="{service}"}})',
        comparator=">=",
        threshold=1,
        window_s=5,
    )


def _diagnosed(
    opened: ev.IncidentOpened, *steps: ev.PlanStep, confidence: float = 0.9, **fields: Any
) -> ev.DiagnosisCompleted:
    fields.setdefault("hypothesis", "it broke")
    return opened.follow(
        ev.DiagnosisCompleted, produced_by="diagnosis", confidence=confidence,
        plan=ev.RemediationPlan(steps=list(steps), verify=_verify(opened.service)), kind="ServiceDown", **fields,
    )  # fmt: skip


def _restart(target: str) -> ev.PlanStep:
    return ev.PlanStep(action="restart_process", target=target, params={"grace_s": 5})


def _types(events: list[ev.Event]) -> list[str]:
    return [e.type for e in events]


def _one(events: list[ev.Event], cls: type[ev.E]) -> ev.E:
    found = [e for e in events if isinstance(e, cls)]
    assert len(found) == 1, _types(events)
    return found[0]


async def _state(incident_store: IncidentStore, incident_id: str) -> S:
    record = await incident_store.get(incident_id)
    assert record is not None
    return record.state


async def _run_to_execution(flow: IncidentFlow, opened: ev.IncidentOpened, step: ev.PlanStep) -> ev.ActionApproved:
    await flow.handle(opened)
    outputs = await flow.handle(_diagnosed(opened, step))
    return _one(outputs, ev.ActionApproved)


async def test_safe_plan_is_approved_executed_verified_and_closed(
    flow: IncidentFlow, incident_store: IncidentStore
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    opened = _opened(service)
    outputs = await flow.handle(opened)
    assert _types(outputs) == ["incident.updated", "diagnosis.requested"]
    assert _one(outputs, ev.DiagnosisRequested).kind == "ServiceDown"

    diagnosed = _diagnosed(opened, _restart(service))
    outputs = await flow.handle(diagnosed)
    approved = _one(outputs, ev.ActionApproved)
    assert (approved.mode, approved.risk.tier, approved.verify) == (
        "auto",
        "SAFE",
        _verify(service),
    )
    assert await _state(incident_store, opened.incident_id or "") is S.EXECUTING
    # A redelivered diagnosis emits exactly what it emitted the first time, with the same event ids.
    again = await flow.handle(diagnosed)
    assert [e.event_id for e in again] == [e.event_id for e in outputs]

    executed = approved.follow(
        ev.ActionExecuted,
        produced_by="execution",
        action_id=approved.action_id,
        step=approved.step,
        idempotency_key=approved.idempotency_key,
        duration_ms=12.0,
    )
    assert _types(await flow.handle(executed)) == ["incident.updated"]
    passed = executed.follow(ev.VerificationPassed, produced_by="execution", action_id=approved.action_id,
                             verify=_verify(service), observed=1.0)  # fmt: skip
    outputs = await flow.handle(passed)
    closed = _one(outputs, ev.IncidentClosed)
    assert (closed.outcome, closed.verified, closed.kind) == (
        "remediated",
        True,
        "ServiceDown",
    )
    assert [s.action for s in closed.actions] == ["restart_process"]
    record = await incident_store.get(opened.incident_id or "")
    assert record is not None and record.state is S.CLOSED
    states = [e.detail["to"] for e in record.audit if e.action == "transition"]
    assert states == [
        "DIAGNOSING",
        "PLANNED",
        "EXECUTING",
        "VERIFYING",
        "RESOLVED",
        "CLOSED",
    ]
    assert any(e.action == "risk_scored" and e.detail["tier"] == "SAFE" for e in record.audit)


async def test_confirm_plan_waits_for_a_human_then_runs(flow: IncidentFlow, incident_store: IncidentStore) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    opened = _opened(service, "HighErrorRate")
    await flow.handle(opened)
    rollback = ev.PlanStep(action="rollback_deploy", target=service, params={"to_version": "v1"})
    outputs = await flow.handle(_diagnosed(opened, rollback))
    escalation = _one(outputs, ev.EscalationRaised)
    assert escalation.needs_decision and escalation.risk is not None and escalation.risk.tier == "CONFIRM"
    assert not [e for e in outputs if isinstance(e, ev.ActionApproved)]
    assert await _state(incident_store, opened.incident_id or "") is S.AWAITING_APPROVAL
    # The approver's brief names the action and its risk, and is kept with the pending action and in the audit.
    assert escalation.brief.startswith(f"Approve rollback_deploy on {service}?")
    assert f"Risk: CONFIRM, score {escalation.risk.score:.2f} — rollback_deploy base risk" in escalation.brief
    assert escalation.brief.endswith(CLOSING) and len(escalation.brief) <= MAX_BRIEF_CHARS
    waiting = await incident_store.get(opened.incident_id or "")
    assert waiting is not None and waiting.facts["actions"][0]["brief"] == escalation.brief
    assert [a.detail for a in waiting.audit if a.action == "approval_brief"] == [
        {"action_id": escalation.action_id, "brief": escalation.brief}
    ]

    wrong = opened.follow(ev.DecisionRecorded, produced_by=TESTS, action_id="not-pending", decision="approve",
                          decided_by="mallory")  # fmt: skip
    assert await flow.handle(wrong) == []
    decision = opened.follow(ev.DecisionRecorded, produced_by=TESTS, action_id=escalation.action_id,
                             decision="approve", decided_by="alice", comment="go")  # fmt: skip
    approved = _one(await flow.handle(decision), ev.ActionApproved)
    assert (approved.mode, approved.approved_by, approved.step.action) == (
        "human",
        "alice",
        "rollback_deploy",
    )
    record = await incident_store.get(opened.incident_id or "")
    assert record is not None and record.state is S.EXECUTING and record.facts["approvals"] == 1
    assert [e.detail["by"] for e in record.audit if e.action == "decision_refused"] == ["mallory"]


RATIONALE = "Errors began right after the deploy of v2;\nv1 served cleanly for a week, so roll back to it."
SIMILAR = ev.Evidence(
    kind="incident", summary="incident 'checkout 5xx after deploy'", score=0.83,
    data={"title": "checkout 5xx after deploy", "outcome": "remediated", "actions": ["rollback_deploy"]},
)  # fmt: skip
# Fewer attempts than risk scoring counts (3), so the record is told in the brief and moves no score.
HISTORY = [ev.ActionStat(kind="HighErrorRate", action="rollback_deploy", attempts=2, successes=2)]


async def _awaiting(flow: IncidentFlow, **diagnosis: Any) -> tuple[ev.IncidentOpened, list[ev.Event]]:
    """A HighErrorRate incident whose rollback plan (CONFIRM) was just diagnosed; (its opening, the outputs)."""
    service = f"svc-{uuid.uuid4().hex[:6]}"
    opened = _opened(service, "HighErrorRate")
    await flow.handle(opened)
    rollback = ev.PlanStep(action="rollback_deploy", target=service, params={"to_version": "v1"})
    return opened, await flow.handle(_diagnosed(opened, rollback, **diagnosis))


async def test_the_brief_informs_the_human_and_decides_nothing(
    flow: IncidentFlow, incident_store: IncidentStore
) -> None:
    plain, plain_out = await _awaiting(flow)
    told, told_out = await _awaiting(flow, hypothesis="a bad deploy\n" + "y" * 3000, rationale=RATIONALE,
                                     evidence=[SIMILAR], history=HISTORY)  # fmt: skip
    plain_ask, told_ask = _one(plain_out, ev.EscalationRaised), _one(told_out, ev.EscalationRaised)
    assert "Why: it broke. (deterministic diagnosis, confidence 0.90)" in plain_ask.brief
    assert "no similar incidents on record" in plain_ask.brief
    assert "Why: Errors began right after the deploy of v2; v1 served cleanly for a week" in told_ask.brief
    assert "Track record: rollback_deploy remediated 2 of 2 past HighErrorRate incidents." in told_ask.brief
    assert '"checkout 5xx after deploy" (remediated; rollback_deploy; similarity 0.83)' in told_ask.brief
    assert len(told_ask.brief) <= MAX_BRIEF_CHARS and told_ask.brief.endswith(CLOSING)
    # Everything decided is the same whatever the brief says.
    assert _types(plain_out) == _types(told_out)
    assert (plain_ask.risk, plain_ask.needs_decision) == (told_ask.risk, told_ask.needs_decision)
    approved = []
    for opened, ask in ((plain, plain_ask), (told, told_ask)):
        assert await _state(incident_store, opened.incident_id or "") is S.AWAITING_APPROVAL
        decision = opened.follow(ev.DecisionRecorded, produced_by=TESTS, action_id=ask.action_id,
                                 decision="approve", decided_by="alice")  # fmt: skip
        approved.append(_one(await flow.handle(decision), ev.ActionApproved))
    assert [(a.mode, a.step.action, a.risk) for a in approved] == [("human", "rollback_deploy", plain_ask.risk)] * 2


class _Published:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    async def publish(self, event: ev.Event) -> None:
        self.events.append(event)


def _panel_text(record: IncidentRecord) -> str:
    panel = approval_panel(record)
    assert panel is not None
    console = Console(file=io.StringIO(), width=400, highlight=False)
    console.print(panel)
    return console.file.getvalue()  # type: ignore[attr-defined]


async def test_people_see_the_brief_over_http_and_on_the_cli(flow: IncidentFlow, incident_store: IncidentStore) -> None:
    opened, outputs = await _awaiting(flow, hypothesis="the deploy [red]broke[/red] it")
    ask, incident_id = _one(outputs, ev.EscalationRaised), opened.incident_id or ""
    app = FastAPI()
    viewer = ApiToken(name="vera", role="viewer", sha256=token_sha256("vera-token"))
    app.include_router(approvals_router(incident_store, _Published(), [viewer]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://coordination",
                                 headers={"Authorization": "Bearer vera-token"}) as client:  # fmt: skip
        listed = {i["incident_id"]: i for i in (await client.get("/incidents")).json()}
        shown = (await client.get(f"/incidents/{incident_id}")).json()
        pending = {"action_id": ask.action_id, "action": "rollback_deploy", "target": opened.service,
                   "tier": "CONFIRM", "score": ask.risk.score if ask.risk else None, "brief": ask.brief}  # fmt: skip
        assert listed[incident_id]["pending"] == pending == shown["pending"]
        record = await incident_store.get(incident_id)
        assert record is not None
        text = _panel_text(record)
        assert "the deploy [red]broke[/red] it" in text  # shown as written: markup is not interpreted
        assert f"awaiting a decision: opswarm approve|reject {incident_id}" in text
        decision = opened.follow(ev.DecisionRecorded, produced_by=TESTS, action_id=ask.action_id, decision="approve",
                                 decided_by="alice", comment="go")  # fmt: skip
        await flow.handle(decision)
        listed = {i["incident_id"]: i for i in (await client.get("/incidents")).json()}
        assert listed[incident_id]["pending"] is None and listed[incident_id]["state"] == "EXECUTING"
    record = await incident_store.get(incident_id)
    assert record is not None
    assert "approved by alice: go" in _panel_text(record) and "Approve rollback_deploy" in _panel_text(record)


async def test_forbidden_plan_is_never_approved_and_escalates(
    flow: IncidentFlow, incident_store: IncidentStore
) -> None:
    opened = _opened(f"db-{uuid.uuid4().hex[:6]}", "DatabaseCorruption")
    await flow.handle(opened)
    failover = ev.PlanStep(action="failover_database", target="orders-db")
    outputs = await flow.handle(_diagnosed(opened, failover))
    assert "action.approved" not in _types(outputs)
    assert _one(outputs, ev.ActionRejected).rejected_by == "coordination"
    assert "forbidden" in _one(outputs, ev.EscalationRaised).reason
    record = await incident_store.get(opened.incident_id or "")
    assert record is not None and record.state is S.PARKED and record.facts["forbidden_blocked"] == 1


async def test_the_fourth_restart_within_the_hour_is_refused(flow: IncidentFlow, incident_store: IncidentStore) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        opened = _opened(service)
        approved = await _run_to_execution(flow, opened, _restart(service))
        executed = approved.follow(
            ev.ActionExecuted,
            produced_by="execution",
            action_id=approved.action_id,
            step=approved.step,
            idempotency_key=approved.idempotency_key,
            duration_ms=1,
        )
        await flow.handle(executed)
        await flow.handle(
            executed.follow(
                ev.VerificationPassed,
                produced_by="execution",
                action_id=approved.action_id,
                verify=_verify(service),
                observed=1,
            )
        )
        assert await _state(incident_store, opened.incident_id or "") is S.CLOSED
    fourth = _opened(service)
    await flow.handle(fourth)
    outputs = await flow.handle(_diagnosed(fourth, _restart(service)))
    assert "action.approved" not in _types(outputs)
    assert "rate limit" in _one(outputs, ev.EscalationRaised).reason
    assert await _state(incident_store, fourth.incident_id or "") is S.PARKED


async def test_a_busy_resource_makes_the_next_incident_wait_its_turn(
    flow: IncidentFlow, incident_store: IncidentStore
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    first, second = _opened(service), _opened(service, "HighLatency")
    approved = await _run_to_execution(flow, first, _restart(service))
    await flow.handle(second)
    outputs = await flow.handle(_diagnosed(second, _restart(service)))
    assert "action.approved" not in _types(outputs)
    waiting = await incident_store.get(second.incident_id or "")
    assert waiting is not None and waiting.facts["waiting"]["holder"] == first.incident_id

    failed = approved.follow(
        ev.ActionFailed,
        produced_by="execution",
        action_id=approved.action_id,
        step=approved.step,
        idempotency_key=approved.idempotency_key,
        error="boom",
    )
    outputs = await flow.handle(failed)
    resumed = _one(outputs, ev.ActionApproved)
    assert resumed.incident_id == second.incident_id
    assert await _state(incident_store, first.incident_id or "") is S.PARKED
    assert await _state(incident_store, second.incident_id or "") is S.EXECUTING


async def test_out_of_order_events_are_refused_and_recorded(flow: IncidentFlow, incident_store: IncidentStore) -> None:
    opened = _opened(f"svc-{uuid.uuid4().hex[:6]}")
    await flow.handle(opened)
    early = opened.follow(ev.VerificationPassed, produced_by="execution", action_id="a", verify=_verify("x"),
                          observed=1)  # fmt: skip
    assert await flow.handle(early) == []
    record = await incident_store.get(opened.incident_id or "")
    assert record is not None and record.state is S.DIAGNOSING
    assert [e.action for e in record.audit][-1] == "verification_ignored"


async def test_alerts_resolving_during_diagnosis_close_the_incident(
    flow: IncidentFlow, incident_store: IncidentStore
) -> None:
    opened = _opened(f"svc-{uuid.uuid4().hex[:6]}")
    await flow.handle(opened)
    resolved = opened.follow(ev.IncidentResolved, produced_by="monitoring", resolved_by="alerts_resolved")
    closed = _one(await flow.handle(resolved), ev.IncidentClosed)
    assert (closed.outcome, closed.verified) == ("resolved_itself", False)
    assert await _state(incident_store, opened.incident_id or "") is S.CLOSED


async def test_consecutive_failures_switch_a_services_automation_off(
    flow: IncidentFlow, incident_store: IncidentStore
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # the fixture's breaker threshold
        opened = _opened(service)
        approved = await _run_to_execution(flow, opened, _restart(service))
        outputs = await flow.handle(approved.follow(
            ev.ActionFailed, produced_by="execution", action_id=approved.action_id, step=approved.step,
            idempotency_key=approved.idempotency_key, error="exit 1",
        ))  # fmt: skip
        assert _one(outputs, ev.EscalationRaised)
    later = _opened(service)
    outputs = await flow.handle(later)
    assert "diagnosis.requested" not in _types(outputs)
    assert "circuit breaker" in _one(outputs, ev.EscalationRaised).reason
    assert await _state(incident_store, later.incident_id or "") is S.PARKED
