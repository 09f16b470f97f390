"""One agent process at run time: its consumers, background tasks, heartbeat and HTTP side, until a stop is requested.

A consumer that fails for good (a fenced producer, say) ends the process with that error, so the supervisor
restarts it; a clean stop lets every consumer finish the event in hand and commit, then forgets the heartbeat.
Each beat carries the handled / dead-lettered / retried counts, the consumer lag and the HTTP port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bus.consumer import EventConsumer
from scheduler.agent_http import AgentHttp, ReadinessCheck, agent_app
from scheduler.agent_metrics import AgentVitals, tracked
from scheduler.heartbeats import HeartbeatRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentIdentity:
    agent: str
    instance_id: str
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)


async def run_agent(
    identity: AgentIdentity,
    consumers: Sequence[EventConsumer],
    heartbeats: HeartbeatRegistry,
    stop: asyncio.Event,
    *,
    beat_every_s: float = 5.0,
    http: AgentHttp | None = None,
    tasks: Sequence[Callable[[asyncio.Event], Awaitable[None]]] = (),
) -> None:
    """Run the consumers, the background `tasks`, the heartbeat and (given `http`) the HTTP server until `stop`.

    A consumer or task that fails ends the agent with its error (the supervisor restarts the process). With
    `http`, its port is bound before anything starts: a port in use fails at once.
    """
    log.info("agent starting", extra={"agent": identity.agent, "instance_id": identity.instance_id})
    vitals = AgentVitals(identity.agent, identity.instance_id, consumers)
    http_port = http.bind() if http is not None else None
    try:
        with tracked(vitals):
            async with asyncio.TaskGroup() as group:
                for consumer in consumers:
                    group.create_task(consumer.run(stop))
                for task in tasks:
                    group.create_task(task(stop))
                group.create_task(_beat_until_stopped(identity, vitals, heartbeats, stop, beat_every_s, http_port))
                if http is not None:
                    checks = [_consumers_started(consumers), _redis_answers(heartbeats), *http.readiness]
                    app = agent_app(identity.agent, identity.instance_id, checks, vitals.refresh_lag, http.routers)
                    group.create_task(http.serve(app, stop))
    finally:
        if http is not None:
            http.close()
        try:
            await heartbeats.forget(identity.agent, identity.instance_id)
        except Exception:
            log.warning("heartbeat not forgotten", extra={"agent": identity.agent}, exc_info=True)
    log.info("agent stopped", extra={"agent": identity.agent, "instance_id": identity.instance_id})


def _consumers_started(consumers: Sequence[EventConsumer]) -> ReadinessCheck:
    async def consumers_started() -> str | None:
        waiting = [consumer.name for consumer in consumers if not consumer.is_started]
        return f"consumers not started: {', '.join(waiting)}" if waiting else None

    return consumers_started


def _redis_answers(heartbeats: HeartbeatRegistry) -> ReadinessCheck:
    async def redis() -> str | None:
        await heartbeats.live()  # one bounded round trip; raising or timing out makes the check fail
        return None

    return redis


async def _beat_until_stopped(
    identity: AgentIdentity,
    vitals: AgentVitals,
    heartbeats: HeartbeatRegistry,
    stop: asyncio.Event,
    beat_every_s: float,
    http_port: int | None,
) -> None:
    consumers = vitals.consumers
    while not stop.is_set():
        try:
            lag = await vitals.refresh_lag()
        except Exception:  # Kafka metadata briefly unavailable: beat without it
            log.warning("consumer lag unknown", extra={"agent": identity.agent}, exc_info=True)
            lag = None
        details = {
            "handled": sum(c.stats.handled for c in consumers),
            "dead_lettered": sum(c.stats.dead_lettered for c in consumers),
            "retries": sum(c.stats.retries for c in consumers),
            "lag": lag,
            "http_port": http_port,
        }
        try:
            await heartbeats.beat(
                identity.agent, identity.instance_id, identity.pid, identity.started_at, "running", details
            )
            vitals.beat_succeeded()
        except Exception:  # Redis briefly away: keep working, the next beat will tell
            log.warning("heartbeat failed", extra={"agent": identity.agent}, exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), beat_every_s)
        except TimeoutError:
            continue
