"""One agent process at run time: its consumers and its heartbeat, until a stop is requested.

A consumer that fails for good (a fenced producer, say) ends the process with that error, so the supervisor
restarts it; a clean stop lets every consumer finish the event in hand and commit, then forgets the heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bus.consumer import EventConsumer
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
    tasks: Sequence[Callable[[asyncio.Event], Awaitable[None]]] = (),
) -> None:
    """Run the consumers, the background `tasks` and the heartbeat until `stop` is set.

    A consumer or task that fails ends the agent with its error (the supervisor restarts the process).
    """
    log.info("agent starting", extra={"agent": identity.agent, "instance_id": identity.instance_id})
    try:
        async with asyncio.TaskGroup() as group:
            for consumer in consumers:
                group.create_task(consumer.run(stop))
            for task in tasks:
                group.create_task(task(stop))
            group.create_task(_beat_until_stopped(identity, consumers, heartbeats, stop, beat_every_s))
    finally:
        try:
            await heartbeats.forget(identity.agent, identity.instance_id)
        except Exception:
            log.warning("heartbeat not forgotten", extra={"agent": identity.agent}, exc_info=True)
    log.info("agent stopped", extra={"agent": identity.agent, "instance_id": identity.instance_id})


async def _beat_until_stopped(
    identity: AgentIdentity,
    consumers: Sequence[EventConsumer],
    heartbeats: HeartbeatRegistry,
    stop: asyncio.Event,
    beat_every_s: float,
) -> None:
    while not stop.is_set():
        details = {
            "handled": sum(c.stats.handled for c in consumers),
            "dead_lettered": sum(c.stats.dead_lettered for c in consumers),
            "retries": sum(c.stats.retries for c in consumers),
        }
        try:
            await heartbeats.beat(
                identity.agent, identity.instance_id, identity.pid, identity.started_at, "running", details
            )
        except Exception:  # Redis briefly away: keep working, the next beat will tell
            log.warning("heartbeat failed", extra={"agent": identity.agent}, exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), beat_every_s)
        except TimeoutError:
            continue
