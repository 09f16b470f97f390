"""The escalation loop: due escalation steps in, messages to people and EscalationNotified / ApprovalExpired out.

Every `poll_every_s` the loop claims the due steps (durable timers, leased for `lease_s`) that coordination
scheduled when a plan started waiting for a human. A step whose decision is no longer pending (answered, expired,
the incident moved on) is completed without a word. Otherwise:

- `notify` / `remind`: the tier's channels get the message concurrently, each with its own retries; one that fails
  never holds up the others. The outcome of every channel travels in EscalationNotified.
- `expire`: ApprovalExpired, with the policy's final outcome (deny, or keep waiting).

The answer's event id is derived from the step, so a step fired again after a crash (between publishing and
completing the timer) duplicates nothing in the incident; its message may reach people twice, never zero times.
The timer is completed only after Kafka acknowledged the answer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping

from pydantic import ValidationError

from agents.coordination.decisions import pending_action
from bus.events import ApprovalExpired, ChannelDelivery, EscalationNotified, Event
from bus.incident_states import IncidentState
from bus.producer import EventPublisher
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.clock import Clock, WallClock
from scheduler.escalations.approval_links import ApprovalLinks
from scheduler.escalations.delivery import deliver_all
from scheduler.escalations.notifications import Channel, Notification
from scheduler.escalations.policies import EscalationPolicies, EscalationPolicy
from scheduler.timers import DurableTimers, Timer, fire_due, poll_due

log = logging.getLogger(__name__)

PRODUCER = "coordination-escalations"
# States an incident passes before its plan waits for a human; a step finding one of them came too early.
_BEFORE_APPROVAL = frozenset({IncidentState.NEW, IncidentState.DIAGNOSING, IncidentState.PLANNED})
_CATCH_UP_S = 60.0


class EscalationLoop:
    def __init__(
        self,
        timers: DurableTimers,
        store: IncidentStore,
        policies: EscalationPolicies,
        channels: Mapping[str, Channel],
        publisher: EventPublisher,
        *,
        owner: str,
        public_url: str,
        links: ApprovalLinks | None = None,
        poll_every_s: float = 0.5,
        lease_s: float = 120.0,
        batch: int = 20,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or WallClock()
        self._timers = timers
        self._store = store
        self._policies = {policy.name: policy for policy in [*policies.policies, policies.default]}
        self._channels = channels
        self._publisher = publisher
        self._owner = owner
        self._public_url = public_url.rstrip("/")
        self._links = links
        self._poll_every_s = poll_every_s
        self._lease_s = lease_s
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due steps until `stop` is set (a task for `run_agent`)."""
        await poll_due(stop, self._poll_every_s, self.fire_due)

    async def fire_due(self) -> int:
        """Claim the due steps and fire them concurrently; how many were claimed."""
        return await fire_due(self._timers, self._owner, self._fire, batch=self._batch, lease_s=self._lease_s,
                              what="escalation")  # fmt: skip

    async def _fire(self, timer: Timer) -> None:
        try:
            record = await self._record_of(timer)
            if await self._not_yet(timer, record):
                return
            answer = await self.fire(timer, record)
            if answer is not None:
                await self._publisher.publish(answer)
            await self._timers.complete(timer.timer_id, self._owner)
        except Exception:  # the lease runs out and the step fires again; the loop goes on with the others
            log.exception("escalation step not completed; it fires again", extra={"timer_id": timer.timer_id})

    async def _record_of(self, timer: Timer) -> IncidentRecord | None:
        incident_id = timer.payload.get("incident_id")
        return await self._store.get(str(incident_id)) if incident_id else None

    async def _not_yet(self, timer: Timer, record: IncidentRecord | None) -> bool:
        """True (and the step is put back for a moment) when the incident has not caught up with the step yet.

        Coordination schedules the steps while applying the event that makes the plan wait, just before that change
        is committed: a step due at once can be claimed before the incident says it waits. Such a step is retried
        for up to a minute, not dropped."""
        payload = timer.payload
        waiting_for = (record.facts.get("escalation") or {}).get("action_id") if record is not None else None
        early = record is None or record.state in _BEFORE_APPROVAL
        caught_up = waiting_for == payload.get("action_id") or not early
        if payload.get("kind") == "resolve" or caught_up or self._clock.now() - timer.due_at > _CATCH_UP_S:
            return False
        await self._timers.complete(timer.timer_id, self._owner)
        await self._timers.schedule(timer.timer_id, self._clock.now() + self._poll_every_s, payload)
        log.info("escalation step ahead of its incident; retried", extra={"timer_id": timer.timer_id})
        return True

    async def fire(self, timer: Timer, record: IncidentRecord | None = None) -> Event | None:
        """The answer to one due step (after sending its messages), or None when its decision is not pending.
        `record`: the incident as just read (read here when not given)."""
        payload = timer.payload
        incident_id, action_id = payload.get("incident_id"), payload.get("action_id")
        if record is None:
            record = await self._record_of(timer)
        policy = self._policies.get(str(payload.get("policy")))
        context = {"timer_id": timer.timer_id, "incident_id": incident_id, "action_id": action_id}
        if record is not None and policy is not None and payload.get("kind") == "resolve":
            return await self._resolve(record, policy, payload, timer)
        if record is None or policy is None or not _awaiting(record, action_id):
            log.info("escalation step no longer needed", extra=context)
            return None
        common = {"event_id": _answer_id(timer), "produced_by": PRODUCER, "incident_id": record.incident_id,
                  "action_id": action_id, "policy": policy.name}  # fmt: skip
        try:
            tier_index, reminder = int(payload["tier"]), int(payload.get("reminder", 0))
        except (KeyError, TypeError, ValueError):
            log.warning("escalation step unreadable; dropped", extra=context)
            return None
        if payload.get("kind") == "expire":
            started = float(record.facts.get("escalation", {}).get("started_at", timer.due_at))
            return ApprovalExpired(**common, waited_s=max(0.0, self._clock.now() - started),
                                   outcome=policy.on_final_timeout)  # fmt: skip
        tier = policy.tiers[min(tier_index, len(policy.tiers) - 1)]
        notification = self.notification(record, policy, tier_index, reminder)
        channels = [self._channels[name] for name in tier.channels if name in self._channels]
        results = await deliver_all(channels, notification) if channels else []
        log.info("escalation step sent", extra={**context, "tier": tier.name, "reminder": reminder,
                                                "delivered": sum(r.status == "delivered" for r in results)})
        try:
            deliveries = [ChannelDelivery(channel=r.channel, status=r.status, attempts=r.attempts, error=r.error)
                          for r in results]  # fmt: skip
        except ValidationError:
            deliveries = []
        return EscalationNotified(**common, tier=tier.name, tier_index=tier_index, reminder=reminder,
                                  recipients=list(tier.recipients), deliveries=deliveries)  # fmt: skip

    async def _resolve(
        self, record: IncidentRecord, policy: EscalationPolicy, payload: dict, timer: Timer
    ) -> EscalationNotified:
        """Tell the tiers that were asked that the request is closed, through the channels they were asked on."""
        tiers = [policy.tiers[i] for i in sorted(set(payload.get("tiers", []))) if 0 <= i < len(policy.tiers)]
        names = list(dict.fromkeys(name for tier in tiers for name in tier.channels if name in self._channels))
        recipients = list(dict.fromkeys(r for tier in tiers for r in tier.recipients))
        outcome = str(payload.get("outcome", "closed"))
        notification = Notification(
            incident_id=record.incident_id, action_id=payload.get("action_id"),
            tier=", ".join(t.name for t in tiers), recipients=tuple(recipients),
            title=f"Closed: {outcome} · {record.title}", text=f"The request is closed: {outcome}.",
            severity=record.severity, links={"page": f"{self._public_url}/approvals"}, kind="resolved",
        )  # fmt: skip
        results = await deliver_all([self._channels[name] for name in names], notification) if names else []
        return EscalationNotified(
            event_id=_answer_id(timer),
            produced_by=PRODUCER, incident_id=record.incident_id, action_id=payload.get("action_id"),
            policy=policy.name, tier=notification.tier or "none", tier_index=max(payload.get("tiers", [0]) or [0]),
            recipients=recipients, resolved=True,
            deliveries=[ChannelDelivery(channel=r.channel, status=r.status, attempts=r.attempts, error=r.error)
                        for r in results],
        )  # fmt: skip

    def notification(self, record: IncidentRecord, policy: EscalationPolicy, tier_index: int, reminder: int
                     ) -> Notification:  # fmt: skip
        tier = policy.tiers[tier_index]
        entry = pending_action(record) or {}
        step, risk = entry.get("step", {}), entry.get("risk", {})
        action_id = entry.get("action_id")
        title = (f"Approve {step.get('action')} on {step.get('target')}? {risk.get('tier', '')} "
                 f"{float(risk.get('score', 0)):.2f} · {record.title}")  # fmt: skip
        links = {"page": f"{self._public_url}/approvals"}
        if self._links is not None and action_id:
            for decision in ("approve", "reject"):
                token = self._links.make(record.incident_id, action_id, decision, f"{tier.name}-link")
                links[decision] = f"{self._public_url}/approvals/links/{token}"
        text = entry.get("brief") or f"{record.title} ({record.severity}) on {record.service}"
        if tier_index:
            text = f"Escalated to {tier.name}: no answer from {', '.join(t.name for t in policy.tiers[:tier_index])}." \
                   f"\n{text}"  # fmt: skip
        return Notification(
            incident_id=record.incident_id, action_id=action_id, tier=tier.name, recipients=tuple(tier.recipients),
            title=title, text=text, severity=record.severity, links=links, reminder=reminder,
        )  # fmt: skip


def _answer_id(timer: Timer) -> str:
    """The event id of a step's answer: the same every time the step fires, so a repeat duplicates nothing."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"opswarm:escalation:{timer.timer_id}"))


def _awaiting(record: IncidentRecord, action_id: object) -> bool:
    return record.state is IncidentState.AWAITING_APPROVAL and record.facts.get("pending_action_id") == action_id
