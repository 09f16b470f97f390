"""Wiring: consume AlertReceived in batches, ask the correlator what they mean, publish the incident events and the
batch's AlertsTriaged (one transaction per batch)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis

from agents.monitoring.monitoring_metrics import MonitoringMetrics
from agents.monitoring.settings import MonitoringSettings
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.events import AlertReceived, AnyEvent, Event
from bus.topics import ALERTS
from scheduler.agent_http import agent_http
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.alert_correlation import AlertCorrelator, CorrelationRules
from scheduler.heartbeats import HeartbeatRegistry
from scheduler.incident_events import TriagedAlert, batch_events


def correlation_rules(settings: MonitoringSettings) -> CorrelationRules:
    return CorrelationRules(
        correlation_window_s=settings.correlation_window_s,
        dedup_window_s=settings.dedup_window_s,
        flap_threshold=settings.flap_threshold,
        flap_window_s=settings.flap_window_s,
        storm_group_by=tuple(settings.storm_group_by),
        storm_rate_window_s=settings.storm_rate_window_s,
        storm_alert_threshold=settings.storm_alert_threshold,
        storm_open_limit=settings.storm_open_limit,
        storm_window_s=settings.storm_window_s,
    )


def build_consumer(
    settings: MonitoringSettings, correlator: AlertCorrelator, metrics: MonitoringMetrics | None = None
) -> EventConsumer:
    metrics = metrics or MonitoringMetrics(settings.instance_id)

    async def handle(batch: Sequence[tuple[AnyEvent, RecordContext]]) -> list[Event]:
        now = datetime.now(UTC)
        alerts: list[tuple[AlertReceived, RecordContext]] = []
        for event, ctx in batch:
            assert isinstance(event, AlertReceived)
            alerts.append((event, ctx))
            metrics.alert_age.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        started = time.monotonic()
        outcomes = await correlator.observe_many(
            [(alert, (ctx.topic, ctx.partition, ctx.offset)) for alert, ctx in alerts]
        )
        metrics.correlate_seconds.observe(time.monotonic() - started)
        metrics.batch_alerts.observe(len(alerts))
        triaged = [TriagedAlert(alert, ctx.offset, outcome) for (alert, ctx), outcome in zip(alerts, outcomes)]
        metrics.count(triaged)
        first = alerts[0][1]
        return batch_events(first.topic, first.partition, triaged)

    return EventConsumer(
        settings.kafka,
        name=f"monitoring-{settings.instance_id}",
        group_id=settings.consumer_group,
        topics=[settings.kafka.topic(ALERTS)],
        batch_handler=handle,
        delivery=Delivery.EXACTLY_ONCE,
        transactional_id=f"opswarm-{settings.instance_id}",
        event_types=frozenset({"alert.received"}),
        start_at=settings.consumer_start,
        max_batch=settings.max_batch,
    )


async def run_monitoring(settings: MonitoringSettings, stop: asyncio.Event, redis: Redis) -> None:
    correlator = AlertCorrelator(redis, correlation_rules(settings), settings.redis_prefix)
    consumer = build_consumer(settings, correlator)
    heartbeats = HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s)
    identity = AgentIdentity("monitoring", settings.instance_id)
    await run_agent(
        identity, [consumer], heartbeats, stop, beat_every_s=settings.heartbeat_every_s, http=agent_http(settings)
    )
