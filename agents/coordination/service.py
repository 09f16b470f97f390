"""Wiring: consume incidents, diagnoses, action outcomes and decisions; decide; publish (one transaction each)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi import APIRouter
from redis.asyncio import Redis

from agents.coordination.approvals_http import approvals_router
from agents.coordination.approvals_page import approvals_page_router
from agents.coordination.escalation_flow import Escalations
from agents.coordination.escalation_loop import EscalationLoop
from agents.coordination.incident_flow import CoordinationPolicy, IncidentFlow
from agents.coordination.settings import CoordinationSettings
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.events import AnyEvent, Event
from bus.producer import EventPublisher
from bus.topics import ACTIONS, DIAGNOSIS, ESCALATIONS, INCIDENTS
from execution.catalog import default_catalog
from knowledge.incident_store import IncidentStore
from scheduler.agent_http import ReadinessCheck, agent_http
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.arbitration import ActionArbiter
from scheduler.escalations.approval_links import ApprovalLinks
from scheduler.escalations.delivery import open_channel
from scheduler.escalations.policies import EscalationPolicies, load_policies
from scheduler.heartbeats import HeartbeatRegistry
from scheduler.timers import DurableTimers

CONSUMED = frozenset(
    {
        "incident.opened", "incident.updated", "incident.resolved", "diagnosis.completed", "decision.recorded",
        "escalation.notified", "approval.expired", "action.executed", "action.failed", "verification.passed",
        "verification.failed",
    }
)  # fmt: skip


def escalation_policies(settings: CoordinationSettings) -> EscalationPolicies:
    """The policy file's policies (PolicyFileError, with what is wrong where, stops the process), or the default."""
    if settings.escalation_policy_file is None:
        return EscalationPolicies()
    return load_policies(Path(settings.escalation_policy_file))


def escalation_timers(redis: Redis, settings: CoordinationSettings) -> DurableTimers:
    return DurableTimers(redis, f"{settings.redis_prefix}:coordination")


def build_flow(
    settings: CoordinationSettings, store: IncidentStore, redis: Redis, escalations: Escalations | None = None
) -> IncidentFlow:
    policy = CoordinationPolicy(
        default_environment=settings.default_environment,
        risk=settings.risk,
        change_freezes=tuple((w.start, w.end) for w in settings.change_freezes),
    )
    arbiter = ActionArbiter(redis, settings.redis_prefix, settings.arbitration)
    return IncidentFlow(store, arbiter, default_catalog(safe_scripts=settings.safe_scripts), policy, escalations)


def build_consumer(settings: CoordinationSettings, flow: IncidentFlow) -> EventConsumer:
    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event]:
        return await flow.handle(event)

    return EventConsumer(
        settings.kafka,
        name=f"coordination-{settings.instance_id}",
        group_id=settings.consumer_group,
        topics=[settings.kafka.topic(t) for t in (INCIDENTS, DIAGNOSIS, ACTIONS, ESCALATIONS)],
        handler=handle,
        delivery=Delivery.EXACTLY_ONCE,
        transactional_id=f"opswarm-{settings.instance_id}",
        event_types=CONSUMED,
        start_at=settings.consumer_start,
    )


async def run_coordination(
    settings: CoordinationSettings, stop: asyncio.Event, redis: Redis, store: IncidentStore
) -> None:
    await store.ensure_indexes()
    policies = escalation_policies(settings)
    timers = escalation_timers(redis, settings)
    consumer = build_consumer(settings, build_flow(settings, store, redis, Escalations(policies, timers)))
    heartbeats = HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s)
    identity = AgentIdentity("coordination", settings.instance_id)
    links = None
    if settings.link_secret is not None:
        links = ApprovalLinks(settings.link_secret, redis, prefix=settings.redis_prefix, ttl_s=settings.link_ttl_s)
    async with (
        EventPublisher(settings.kafka, client_id=f"coordination-{settings.instance_id}-http") as publisher,
        httpx.AsyncClient() as channel_http,
    ):
        channels = {name: open_channel(name, config, http=channel_http) for name, config in policies.channels.items()}
        escalation_loop = EscalationLoop(
            timers, store, policies, channels, publisher, owner=settings.instance_id, public_url=settings.public_url,
            links=links,
        )  # fmt: skip
        routers = people_routers(settings, store, publisher, links)
        http = agent_http(settings, routers=routers, readiness=[_mongo_ready(store)])
        await run_agent(identity, [consumer], heartbeats, stop, beat_every_s=settings.heartbeat_every_s, http=http,
                        tasks=[escalation_loop.run])  # fmt: skip


def people_routers(
    settings: CoordinationSettings, store: IncidentStore, publisher: EventPublisher, links: ApprovalLinks | None
) -> list[APIRouter]:
    """The routes people use: the incidents API and the approvals page (signed links: None when no secret is set)."""
    return [
        approvals_router(store, publisher, settings.api_tokens),
        approvals_page_router(store, publisher, settings.api_tokens, links=links, form_secret=settings.link_secret),
    ]


def _mongo_ready(store: IncidentStore) -> ReadinessCheck:
    async def check() -> str | None:
        try:
            await store.list(limit=1)
        except Exception as exc:  # any failure means not ready; the reason is what /readyz shows
            return f"mongo: {exc!r}"
        return None

    return check
