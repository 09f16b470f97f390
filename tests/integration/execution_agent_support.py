"""Helpers for the execution agent's integration tests (this module holds no tests).

The agent runs in this process (its own consumer group starting at "latest", its own Redis prefix and instance
id) or as `python -m agents.execution`; its managed processes are real children, checked through /proc.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.execution.service import ExecutionAgent, execution_agent
from agents.execution.settings import ExecutionSettings
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.errors import EventDecodeError
from bus.events import ActionApproved, Event, PlanStep, RiskAssessment, VerifySpec
from bus.producer import EventPublisher
from bus.topics import ACTIONS
from execution.adapters.process_supervisor import ProcessSupervisor
from tests.integration.execution_support import RUN_UNTIL_KILLED, python_argv, wait_until
from tests.integration.kafka_reading import TopicReader

RESTART_WEB = PlanStep(action="restart_process", target="web", params={"grace_s": 5}, timeout_s=20)
_START_TIMEOUT_S = 60.0


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[ProcessSupervisor]:
    """The managed process `web` running in tmp_path/targets; everything managed there is stopped afterwards."""
    supervisor = ProcessSupervisor(tmp_path / "targets", stop_timeout_s=5.0)
    await supervisor.start("web", python_argv(RUN_UNTIL_KILLED, "web"))
    await wait_until(lambda: starts(supervisor, "web") == 1, what="web ready")
    yield supervisor
    cleanup = ProcessSupervisor(tmp_path / "targets", stop_timeout_s=1.0)
    for name in cleanup.names():
        await cleanup.stop(name)


def starts(supervisor: ProcessSupervisor, name: str) -> int:
    """How many times `name` has started: each start prints `ready` to its log."""
    log_file = supervisor.log_file(name)
    return log_file.read_text().count("ready") if log_file.exists() else 0


def pid_of(supervisor: ProcessSupervisor, name: str) -> int | None:
    status = supervisor.status(name)
    return status.pid if status else None


def agent_settings(
    services,  # noqa: ANN001 - tests/conftest.py
    kafka_config: KafkaConfig,
    key_prefix: str,
    tmp_path: Path,
    prometheus_url: str | None = None,
) -> ExecutionSettings:
    run = uuid.uuid4().hex[:10]
    return ExecutionSettings(
        kafka=kafka_config, redis_url=SecretStr(services.redis_url), redis_prefix=key_prefix,
        instance_id=f"execution-{run}", consumer_group=f"execution-test-{run}", consumer_start="latest",
        http_port=None, heartbeat_every_s=0.5, supervisor_dir=tmp_path / "targets",
        deployments_dir=tmp_path / "deployments", clear_disk_roots=[str(tmp_path / "scenarios")],
        prometheus_url=prometheus_url, verify_poll_every_s=0.1,
    )  # fmt: skip


@asynccontextmanager
async def running(settings: ExecutionSettings, redis: Redis) -> AsyncIterator[ExecutionAgent]:
    """The agent running in this process with its consumer in its group; stopped cleanly afterwards."""
    stop = asyncio.Event()
    async with execution_agent(settings, redis) as agent:
        task = asyncio.create_task(agent.run(stop))
        started = asyncio.create_task(agent.consumer.wait_started())
        await asyncio.wait([task, started], timeout=_START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            stop.set()
            await task  # raises what ended it, if something did
            raise AssertionError(f"the execution consumer did not start within {_START_TIMEOUT_S}s")
        try:
            yield agent
        finally:
            stop.set()
            await asyncio.wait_for(task, _START_TIMEOUT_S)


def approval(
    step: PlanStep,
    *,
    verify: VerifySpec | None = None,
    rollback: list[PlanStep] | None = None,
    incident_id: str | None = None,
) -> ActionApproved:
    action_id = str(uuid.uuid4())
    return ActionApproved(
        produced_by="tests", incident_id=incident_id or f"inc-{action_id[:8]}", action_id=action_id, step=step,
        approved_by="tests", mode="auto", risk=RiskAssessment(score=0.1, tier="SAFE"),
        idempotency_key=f"action:{action_id}", verify=verify, rollback=rollback or [],
    )  # fmt: skip


def answers_to(records, approved: ActionApproved, *types: str) -> list[Event]:  # noqa: ANN001
    """The events read that `approved` caused (of `types`, if given), in the order read."""
    found = []
    for record in records:
        try:
            event = decode_event(record.value)
        except EventDecodeError:
            continue
        if event.causation_id == approved.event_id and (not types or event.type in types):
            found.append(event)
    return found


async def publish_and_read(
    kafka_config: KafkaConfig, approved: ActionApproved, *types: str, count: int = 1
) -> list[Event]:
    """Publish `approved` and return its first `count` answers (of `types`, if given)."""
    async with TopicReader(kafka_config, [kafka_config.topic(ACTIONS)]) as reader:
        async with EventPublisher(kafka_config, client_id="tests") as publisher:
            await publisher.publish(approved)
        records = await reader.until(lambda rs: len(answers_to(rs, approved, *types)) >= count, 60)
    return answers_to(records, approved, *types)[:count]
