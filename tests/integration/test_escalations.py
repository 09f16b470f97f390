"""Escalations on real FerretDB and Redis, with a real signed-webhook receiver on loopback: tiers walk on their
timeouts, reminders go out, the final timeout denies (or keeps waiting), late answers are refused, four-eyes needs
two different approvers, a requester cannot approve its own request, and durable steps are neither lost nor doubled
by a restart. Time is a manual clock shared by the flow, the timers and the loop, so no test waits for a timeout."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.coordination.decisions import request_decision
from agents.coordination.escalation_flow import Escalations
from agents.coordination.escalation_loop import EscalationLoop
from agents.coordination.incident_flow import CoordinationPolicy, IncidentFlow
from bus import events as ev
from bus.incident_states import IncidentState as S
from execution.catalog import default_catalog
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.arbitration import ActionArbiter, ArbitrationPolicy
from scheduler.clock import ManualClock
from scheduler.escalations.delivery import open_channel
from scheduler.escalations.notifications import RetryPolicy, WebhookChannelConfig
from scheduler.escalations.policies import EscalationPolicies, EscalationPolicy, PolicyMatch, Tier
from scheduler.escalations.webhook_channel import verify_signature
from scheduler.timers import DurableTimers
from tests.app_serving import serve_app
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-tests"
OWNER = "coordination-test"


@dataclass
class Receiver:
    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_tcp_port()
    got = Receiver(f"http://127.0.0.1:{port}/hook")
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        if got.failing:
            return Response(status_code=500)
        headers = request.headers
        assert verify_signature(SECRET, headers["X-Opswarm-Timestamp"], body, headers["X-Opswarm-Signature"])
        got.bodies.append(await request.json())
        return Response(status_code=204)

    async with serve_app(app, port):
        yield got


def policies(receiver: Receiver, **policy: Any) -> EscalationPolicies:
    hook = WebhookChannelConfig(url=receiver.url, secret=SecretStr(SECRET),
                                retry=RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=5))  # fmt: skip
    tiers = [Tier(name="on-call", recipients=["alice@example.com"], channels=["hook"], timeout_s=60, remind_every_s=30),
             Tier(name="secondary", recipients=["bob@example.com"], channels=["hook"], timeout_s=60)]  # fmt: skip
    fields = {"name": "prod", "match": PolicyMatch(services=["svc-*"]), "tiers": tiers, "four_eyes_min_score": None,
              **policy}  # fmt: skip
    return EscalationPolicies(channels={"hook": hook}, policies=[EscalationPolicy(**fields)])


@dataclass
class Rig:
    flow: IncidentFlow
    loop: EscalationLoop
    timers: DurableTimers
    clock: ManualClock
    store: IncidentStore

    async def tick(self, seconds: float = 0.0) -> list[str]:
        """Move the clock, fire what is due (as the loop does) and apply the answers; their types."""
        self.clock.advance(seconds)
        fired = []
        for timer in await self.timers.claim_due(OWNER, 20, 60):
            answer = await self.loop.fire(timer)
            if answer is not None:
                await self.flow.handle(answer)
                fired.append(answer.type)
            await self.timers.complete(timer.timer_id, OWNER)
        return fired

    async def record(self, incident_id: str) -> IncidentRecord:
        found = await self.store.get(incident_id)
        assert found is not None
        return found


@pytest.fixture
async def rig_for(incident_store: IncidentStore, redis_client: Redis, key_prefix: str, receiver: Receiver):  # noqa: ANN201
    clients: list[httpx.AsyncClient] = []

    def make(escalation_policies: EscalationPolicies) -> Rig:
        clock = ManualClock(start=time.time())
        timers = DurableTimers(redis_client, f"{key_prefix}:coordination", clock)
        arbiter = ActionArbiter(redis_client, key_prefix, ArbitrationPolicy())
        flow = IncidentFlow(incident_store, arbiter, default_catalog(), CoordinationPolicy(),
                            Escalations(escalation_policies, timers, clock))  # fmt: skip
        client = httpx.AsyncClient()
        clients.append(client)
        channels = {name: open_channel(name, config, http=client)
                    for name, config in escalation_policies.channels.items()}  # fmt: skip
        loop = EscalationLoop(timers, incident_store, escalation_policies, channels, None,  # type: ignore[arg-type]
                              owner=OWNER, public_url="http://127.0.0.1:9183", clock=clock)  # fmt: skip
        return Rig(flow, loop, timers, clock, incident_store)

    yield make
    for client in clients:
        await client.aclose()


async def awaiting_approval(rig: Rig, produced_by: str = "diagnosis") -> tuple[ev.IncidentOpened, str]:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    alert = ev.AlertRef(fingerprint=uuid.uuid4().hex[:16], alertname="HighErrorRate", status="firing",
                        labels={"service": service})  # fmt: skip
    opened = ev.IncidentOpened(produced_by="monitoring", incident_id=f"inc-{uuid.uuid4().hex[:10]}",
                               fingerprint=alert.fingerprint, title=f"HighErrorRate on {service}", service=service,
                               severity="critical", alerts=[alert])  # fmt: skip
    await rig.flow.handle(opened)
    step = ev.PlanStep(action="rollback_deploy", target=service, params={"to_version": "1.0.0"})
    diagnosed = opened.follow(ev.DiagnosisCompleted, produced_by=produced_by, hypothesis="the deploy broke it",
                              confidence=0.8, plan=ev.RemediationPlan(steps=[step]), kind="HighErrorRate")  # fmt: skip
    await rig.flow.handle(diagnosed)
    record = await rig.record(opened.incident_id or "")
    assert record.state is S.AWAITING_APPROVAL
    return opened, record.facts["pending_action_id"]


def decision(opened: ev.IncidentOpened, action_id: str, by: str, verdict: str = "approve") -> ev.DecisionRecorded:
    return ev.DecisionRecorded(produced_by="approvals", incident_id=opened.incident_id, action_id=action_id,
                               decision=verdict, decided_by=by, comment="looked at it", via="api")  # type: ignore[arg-type]


class NoPublisher:
    async def publish(self, event: ev.Event) -> object:
        raise AssertionError(f"nothing should be published, got {event.type}")


def escalation_notes(record: IncidentRecord) -> list[str]:
    """The escalation's steps in the timeline (after the request for approval itself)."""
    notes = [e.summary for e in record.timeline if e.kind in ("escalation", "notification")]
    assert notes[1].startswith("approve rollback_deploy on svc-"), notes
    return [notes[0], *notes[2:]]


async def test_silence_walks_every_tier_and_the_final_timeout_denies(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver))
    opened, action_id = await awaiting_approval(rig)
    incident_id = opened.incident_id or ""
    # on-call at 0, its reminder at 30, secondary at 60, the final timeout at 120.
    assert await rig.timers.pending() == 4

    assert await rig.tick() == ["escalation.notified"]
    assert await rig.tick(29) == []
    assert await rig.tick(1) == ["escalation.notified"]
    assert await rig.tick(30) == ["escalation.notified"]
    assert [(b["tier"], b["reminder"], b["recipients"]) for b in receiver.bodies] == [
        ("on-call", 0, ["alice@example.com"]), ("on-call", 1, ["alice@example.com"]),
        ("secondary", 0, ["bob@example.com"])]  # fmt: skip
    assert all(b["incident_id"] == incident_id and b["action_id"] == action_id for b in receiver.bodies)
    assert "rollback_deploy" in receiver.bodies[0]["title"]

    assert await rig.tick(60) == ["approval.expired"]
    record = await rig.record(incident_id)
    assert record.state is S.PARKED
    assert [a["status"] for a in record.facts["actions"]] == ["rejected"]
    assert escalation_notes(record) == [
        "policy prod: on-call (60 s) → secondary (60 s); then deny",
        "asked tier 1, on-call (alice@example.com)",
        "on-call via hook: delivered after 1 attempt(s)",
        "reminder 1 to on-call (alice@example.com)",
        "on-call via hook: delivered after 1 attempt(s)",
        "escalated to tier 2, secondary (bob@example.com)",
        "secondary via hook: delivered after 1 attempt(s)",
        "nobody answered within 120 s (tiers on-call, secondary): denied by policy prod",
    ]
    actions = [e.action for e in record.audit]
    assert actions.count("escalation_notified") == 3 and "approval_expired" in actions

    # A late answer is refused, and the audit says why.
    await rig.flow.handle(decision(opened, action_id, "alice"))
    record = await rig.record(incident_id)
    [refused] = [e for e in record.audit if e.action == "decision_refused"]
    assert refused.detail["reason"] == "the approval expired after 120 s without an answer; decision refused"
    assert record.state is S.PARKED
    # The tiers that were asked hear that it is closed (one message per channel), then nothing more happens.
    assert await rig.tick() == ["escalation.notified"]
    closing = receiver.bodies[-1]
    assert (closing["type"], len(receiver.bodies)) == ("opswarm.approval_resolved", 4)
    assert "denied by policy prod" in closing["text"]
    record = await rig.record(incident_id)
    assert escalation_notes(record)[-1] == "told on-call, secondary the request is closed: hook delivered"
    assert await rig.tick(600) == []
    # The CLI and the API say so before sending anything.
    told = await request_decision(rig.store, NoPublisher(), incident_id, "approve", "alice")
    assert (told.status, told.message) == ("not_awaiting", f"the approval for incident {incident_id} expired after "
                                           "120 s without an answer (policy prod); it is PARKED now: decision refused")


async def test_an_answer_stops_the_escalation(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver))
    opened, action_id = await awaiting_approval(rig)
    assert await rig.tick() == ["escalation.notified"]
    outputs = await rig.flow.handle(decision(opened, action_id, "alice"))
    assert [e.type for e in outputs if e.type == "action.approved"] == ["action.approved"]
    assert await rig.tick() == ["escalation.notified"]  # on-call hears it is closed
    assert [b["type"] for b in receiver.bodies] == ["opswarm.approval_requested", "opswarm.approval_resolved"]
    assert "approved by alice via api" in receiver.bodies[-1]["text"]
    assert await rig.tick(600) == []  # every later step finds nothing pending
    assert await rig.timers.pending() == 0


async def test_keep_waiting_stops_asking_but_still_takes_an_answer(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver, on_final_timeout="keep_waiting"))
    opened, action_id = await awaiting_approval(rig)
    assert await rig.tick(120) == ["escalation.notified"] * 3 + ["approval.expired"]
    record = await rig.record(opened.incident_id or "")
    assert record.state is S.AWAITING_APPROVAL
    assert escalation_notes(record)[-1].endswith("the policy keeps the action waiting, no tier is asked any more")
    outputs = await rig.flow.handle(decision(opened, action_id, "bob"))
    assert "action.approved" in [e.type for e in outputs]


async def test_four_eyes_needs_two_different_approvers(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver, four_eyes_min_score=0.0))
    opened, action_id = await awaiting_approval(rig)
    incident_id = opened.incident_id or ""

    assert "action.approved" not in [e.type for e in await rig.flow.handle(decision(opened, action_id, "alice"))]
    record = await rig.record(incident_id)
    assert record.state is S.AWAITING_APPROVAL
    assert any(e.summary.startswith("approval 1 of 2 by alice") for e in record.timeline)

    assert await rig.flow.handle(decision(opened, action_id, "alice")) == []
    record = await rig.record(incident_id)
    [refused] = [e for e in record.audit if e.action == "decision_refused"]
    assert refused.detail["reason"] == "alice approved already; four-eyes needs a second, different approver"

    outputs = await rig.flow.handle(decision(opened, action_id, "bob"))
    approved = [e for e in outputs if isinstance(e, ev.ActionApproved)]
    assert len(approved) == 1
    record = await rig.record(incident_id)
    assert record.state is S.EXECUTING
    assert [e.detail["by"] for e in record.audit if e.action == "decision"] == ["bob"]


async def test_a_requester_cannot_approve_its_own_request(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver))
    opened, action_id = await awaiting_approval(rig, produced_by="carol")
    await rig.flow.handle(decision(opened, action_id, "carol"))
    record = await rig.record(opened.incident_id or "")
    [refused] = [e for e in record.audit if e.action == "decision_refused"]
    assert refused.detail["reason"] == "carol requested this action and cannot approve its own request"
    assert record.state is S.AWAITING_APPROVAL
    # Rejecting one's own request is allowed; approving by someone else too.
    outputs = await rig.flow.handle(decision(opened, action_id, "dave"))
    assert "action.approved" in [e.type for e in outputs]


async def test_steps_survive_a_restart_and_are_not_doubled(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver))
    opened, action_id = await awaiting_approval(rig)
    # The diagnosis delivered again (a redelivery after a crash): the same steps, not twice as many.
    assert await rig.timers.pending() == 4

    # A worker claims the first step, sends it and dies before completing it: after its lease the step fires
    # again; its answer has the same event id, so the incident records it once.
    [claimed] = await rig.timers.claim_due("crashed-worker", 20, 60)
    first = await rig.loop.fire(claimed)
    assert first is not None
    await rig.flow.handle(first)

    restarted = rig_for(policies(receiver))  # a new process: new flow, loop and timers on the same Redis
    restarted.clock.set(rig.clock.now() + 61)
    fired = await restarted.tick()
    assert fired == ["escalation.notified"] * 3  # the crashed claim, the reminder, the second tier
    record = await rig.record(opened.incident_id or "")
    asked = [e.summary for e in record.timeline if e.summary.startswith("asked tier 1")]
    assert len(asked) == 1
    assert [e.detail["tier_index"] for e in record.audit if e.action == "escalation_notified"] == [0, 0, 1]


async def test_a_failing_channel_is_recorded_and_the_escalation_goes_on(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    rig = rig_for(policies(receiver))
    opened, _ = await awaiting_approval(rig)
    receiver.failing = True
    assert await rig.tick() == ["escalation.notified"]
    record = await rig.record(opened.incident_id or "")
    [failed] = [e.summary for e in record.timeline if e.kind == "notification"]
    assert failed.startswith("on-call via hook: failed after 2 attempt(s)")
    receiver.failing = False
    assert await rig.tick(30) == ["escalation.notified"]
    assert len(receiver.bodies) == 1


async def test_a_step_ahead_of_its_incident_is_retried_not_dropped(rig_for, receiver: Receiver) -> None:  # noqa: ANN001
    # Coordination schedules the steps just before committing the change that makes the plan wait: the loop may
    # claim the first one while the incident still reads DIAGNOSING.
    rig = rig_for(policies(receiver))
    service = f"svc-{uuid.uuid4().hex[:6]}"
    opened = ev.IncidentOpened(produced_by="monitoring", incident_id=f"inc-{uuid.uuid4().hex[:10]}",
                               fingerprint=uuid.uuid4().hex[:16], title=f"X on {service}", service=service,
                               severity="critical")  # fmt: skip
    await rig.flow.handle(opened)
    payload = {"incident_id": opened.incident_id, "action_id": "act-1", "policy": "prod", "kind": "notify",
               "tier": 0, "reminder": 0}  # fmt: skip
    await rig.timers.schedule("esc:early", rig.clock.now(), payload)

    [claimed] = await rig.timers.claim_due(OWNER, 20, 60)
    await rig.loop._fire(claimed)  # the rig's loop has no publisher: publishing anything would fail the test
    assert await rig.timers.pending() == 1 and receiver.bodies == []
    rig.clock.advance(1)
    [again] = await rig.timers.claim_due(OWNER, 20, 60)
    assert again.timer_id == "esc:early"

    # A step that never finds its incident waiting gives up after a minute.
    await rig.timers.complete(again.timer_id, OWNER)
    await rig.timers.schedule("esc:early", rig.clock.now(), payload)
    rig.clock.advance(61)
    [late] = await rig.timers.claim_due(OWNER, 20, 60)
    late_due = late.due_at
    assert rig.clock.now() - late_due > 60
    await rig.loop._fire(late)
    assert await rig.timers.pending() == 0 and receiver.bodies == []
