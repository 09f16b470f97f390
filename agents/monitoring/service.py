"""Wiring: consume AlertReceived, ask the correlator what it means, publish the incident events (one transaction)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.monitoring.settings import MonitoringSettings
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.events import AlertReceived, AnyEvent, Event
from bus.topics import ALERTS
from scheduler.agent_http import agent_http
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.alert_correlation import AlertCorrelator, CorrelationRules
from scheduler.heartbeats import HeartbeatRegistry
from scheduler.incident_events import incident_events


def build_consumer(settings: MonitoringSettings, correlator: AlertCorrelator) -> EventConsumer:
    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event]:
        assert isinstance(event, AlertReceived)
        return incident_events(event, await correlator.observe(event))

    return EventConsumer(
        settings.kafka,
        name=f"monitoring-{settings.instance_id}",
        group_id=settings.consumer_group,
        topics=[settings.kafka.topic(ALERTS)],
        handler=handle,
        delivery=Delivery.EXACTLY_ONCE,
        transactional_id=f"opswarm-{settings.instance_id}",
        event_types=frozenset({"alert.received"}),
        start_at=settings.consumer_start,
    )


async def run_monitoring(settings: MonitoringSettings, stop: asyncio.Event, redis: Redis) -> None:
    rules = CorrelationRules(
        correlation_window_s=settings.correlation_window_s,
        dedup_window_s=settings.dedup_window_s,
        flap_threshold=settings.flap_threshold,
        flap_window_s=settings.flap_window_s,
    )
    correlator = AlertCorrelator(redis, rules, settings.redis_prefix)
    consumer = build_consumer(settings, correlator)
    heartbeats = HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s)
    identity = AgentIdentity("monitoring", settings.instance_id)
    await run_agent(
        identity, [consumer], heartbeats, stop, beat_every_s=settings.heartbeat_every_s, http=agent_http(settings)
    )
