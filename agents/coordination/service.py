"""Wiring: consume incidents, diagnoses, action outcomes and decisions; decide; publish (one transaction each)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.coordination.approvals_http import approvals_router
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
from scheduler.heartbeats import HeartbeatRegistry

CONSUMED = frozenset(
    {
        "incident.opened", "incident.updated", "incident.resolved", "diagnosis.completed", "decision.recorded",
        "action.executed", "action.failed", "verification.passed", "verification.failed",
    }
)  # fmt: skip


def build_flow(settings: CoordinationSettings, store: IncidentStore, redis: Redis) -> IncidentFlow:
    policy = CoordinationPolicy(
        default_environment=settings.default_environment,
        risk=settings.risk,
        change_freezes=tuple((w.start, w.end) for w in settings.change_freezes),
    )
    arbiter = ActionArbiter(redis, settings.redis_prefix, settings.arbitration)
    return IncidentFlow(store, arbiter, default_catalog(safe_scripts=settings.safe_scripts), policy)


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
    consumer = build_consumer(settings, build_flow(settings, store, redis))
    heartbeats = HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s)
    identity = AgentIdentity("coordination", settings.instance_id)
    async with EventPublisher(settings.kafka, client_id=f"coordination-{settings.instance_id}-http") as publisher:
        http = agent_http(settings, routers=[approvals_router(store, publisher)], readiness=[_mongo_ready(store)])
        await run_agent(identity, [consumer], heartbeats, stop, beat_every_s=settings.heartbeat_every_s, http=http)


def _mongo_ready(store: IncidentStore) -> ReadinessCheck:
    async def check() -> str | None:
        try:
            await store.list(limit=1)
        except Exception as exc:  # any failure means not ready; the reason is what /readyz shows
            return f"mongo: {exc!r}"
        return None

    return check
