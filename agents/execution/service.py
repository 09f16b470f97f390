"""Wiring: consume ActionApproved, run each action at most once, answer it; verify executed actions on a timer.

The consumer is exactly-once: the answers and the consumed offsets commit in one Kafka transaction. The actions'
side effects are outside Kafka, so "at most once" rests on the idempotency claim each approval takes before
acting (see `action_runs`), and a redelivery after a crash gets the recorded answer or an "interrupted" one.

The claims' owner is `<instance_id>/<nonce>`, the nonce new in every process life: a restarted process does
not mistake the claim its predecessor left unfinished for its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from agents.execution.action_runs import ActionRuns
from agents.execution.run_once import RunOnce
from agents.execution.settings import ExecutionSettings
from agents.execution.verification_loop import VerificationLoop
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.errors import RetriableError
from bus.events import ActionApproved, AnyEvent, Event
from bus.producer import EventPublisher
from bus.topics import ACTIONS
from execution.adapters import ActionAdapter
from execution.adapters.deployment_actions import RollbackDeployAdapter, ScaleAdapter
from execution.adapters.deployment_platform import DeploymentPlatform, LocalDeploymentPlatform
from execution.adapters.disk_cleanup import ClearDiskAdapter, DiskCleanupConfig
from execution.adapters.http_call import FlushConnectionPoolAdapter
from execution.adapters.kubernetes_platform import KubernetesDeploymentPlatform, api_client_for
from execution.adapters.process_supervisor import ProcessSupervisor
from execution.adapters.restart_process import RestartProcessAdapter
from execution.adapters.scripts import RunAllowlistedScriptAdapter
from execution.catalog import default_catalog
from execution.executor import ActionExecutor
from execution.prometheus_queries import PrometheusQueries
from scheduler.agent_http import agent_http
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.heartbeats import HeartbeatRegistry
from scheduler.idempotency import IdempotencyStore
from scheduler.timers import DurableTimers

log = logging.getLogger(__name__)

AGENT = "execution"


def build_executor(settings: ExecutionSettings, http_client: httpx.AsyncClient) -> ActionExecutor:
    """The catalog and every adapter this host can run: local processes, deployments (local or Kubernetes), disk,
    HTTP, scripts."""
    supervisor = ProcessSupervisor(settings.supervisor_dir)
    platform: DeploymentPlatform
    if settings.deployment_platform == "kubernetes":
        platform = KubernetesDeploymentPlatform(api_client_for(settings.kubernetes), settings.kubernetes)
    else:
        platform = LocalDeploymentPlatform(supervisor, settings.deployments_dir)
    adapters: list[ActionAdapter] = [
        RestartProcessAdapter(supervisor),
        ScaleAdapter(platform),
        RollbackDeployAdapter(platform),
        FlushConnectionPoolAdapter(settings.admin_endpoints, http_client),
        RunAllowlistedScriptAdapter(settings.scripts),
    ]
    if settings.clear_disk_roots:  # none configured: clear_disk is refused as "no adapter on this agent"
        roots = [Path(root).resolve() for root in settings.clear_disk_roots]
        adapters.append(ClearDiskAdapter(DiskCleanupConfig(allowed_roots=roots)))
    catalog = default_catalog(safe_scripts=settings.scripts.safe_names())
    return ActionExecutor(catalog, {adapter.name: adapter for adapter in adapters})


def verification_timers(redis: Redis, settings: ExecutionSettings) -> DurableTimers:
    """The execution agent's own timers (a key area of its own: other agents' timers are not ours to fire)."""
    return DurableTimers(redis, f"{settings.redis_prefix}:{AGENT}")


def build_consumer(settings: ExecutionSettings, runs: ActionRuns) -> EventConsumer:
    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event]:
        assert isinstance(event, ActionApproved)
        try:
            return [await runs.answer(event)]
        except RedisError as exc:  # Redis briefly away: the loop retries the record, bounded
            raise RetriableError(f"redis: {type(exc).__name__}: {exc}") from exc

    return EventConsumer(
        settings.kafka,
        name=f"{AGENT}-{settings.instance_id}",
        group_id=settings.consumer_group,
        topics=[settings.kafka.topic(ACTIONS)],
        handler=handle,
        delivery=Delivery.EXACTLY_ONCE,
        transactional_id=f"opswarm-{settings.instance_id}",
        event_types=frozenset({"action.approved"}),
        start_at=settings.consumer_start,
    )


@dataclass(frozen=True)
class ExecutionAgent:
    """Everything the execution process runs: the approvals consumer and the verification loop."""

    settings: ExecutionSettings
    identity: AgentIdentity
    consumer: EventConsumer
    verification: VerificationLoop
    heartbeats: HeartbeatRegistry

    async def run(self, stop: asyncio.Event) -> None:
        await run_agent(
            self.identity,
            [self.consumer],
            self.heartbeats,
            stop,
            beat_every_s=self.settings.heartbeat_every_s,
            http=agent_http(self.settings),
            tasks=[self.verification.run],
        )


@asynccontextmanager
async def execution_agent(settings: ExecutionSettings, redis: Redis) -> AsyncIterator[ExecutionAgent]:
    """The execution agent, with the HTTP clients it owns open for as long as the context lasts."""
    owner = f"{settings.instance_id}/{uuid.uuid4().hex[:12]}"
    http_client = httpx.AsyncClient(follow_redirects=False, timeout=30.0)
    metrics = None
    if settings.prometheus_url:
        metrics = PrometheusQueries(settings.prometheus_url, timeout_s=settings.prometheus_timeout_s)
    try:
        executor = build_executor(settings, http_client)
        once = RunOnce(IdempotencyStore(redis, settings.redis_prefix, settings.idempotency_ttl_s), owner)
        timers = verification_timers(redis, settings)
        verification = VerificationLoop(
            timers,
            once,
            executor,
            metrics,
            EventPublisher(settings.kafka, client_id=f"{AGENT}-{settings.instance_id}-verification"),
            poll_every_s=settings.verify_poll_every_s,
            lease_s=settings.verify_lease_s,
            query_timeout_s=2 * settings.prometheus_timeout_s,  # a guard: the client times out first
            batch=settings.verify_batch,
        )
        log.info(
            "execution agent assembled",
            extra={
                "owner": owner,
                "metrics_source": settings.prometheus_url,
                "supervisor_dir": str(settings.supervisor_dir),
            },
        )
        yield ExecutionAgent(
            settings=settings,
            identity=AgentIdentity(AGENT, settings.instance_id),
            consumer=build_consumer(settings, ActionRuns(executor, once, timers)),
            verification=verification,
            heartbeats=HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s),
        )
    finally:
        if metrics is not None:
            await metrics.aclose()
        await http_client.aclose()


async def run_execution(settings: ExecutionSettings, stop: asyncio.Event, redis: Redis) -> None:
    async with execution_agent(settings, redis) as agent:
        await agent.run(stop)
