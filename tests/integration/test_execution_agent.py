"""The execution agent on the real stack: each approved action runs at most once — across repeats, unfinished
claims and a crash of the agent mid-action — and a failed step is rolled back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from agents.execution.action_runs import derived_event_id
from agents.execution.settings import ExecutionSettings
from bus.config import KafkaConfig
from bus.events import PlanStep
from bus.producer import EventPublisher
from bus.topics import ACTIONS
from execution.adapters.process_supervisor import LaunchSpec, ManagedProcess, ProcessSupervisor
from execution.adapters.state_files import write_model
from scheduler.heartbeats import HeartbeatRegistry
from scheduler.idempotency import IdempotencyStore
from tests.integration.execution_agent_support import (
    RESTART_WEB,
    agent_settings,
    answers_to,
    approval,
    pid_of,
    publish_and_read,
    running,
    starts,
    web,  # noqa: F401 - a fixture
)
from tests.integration.execution_support import file_contains, process_alive, python_argv, wait_until
from tests.integration.kafka_reading import TopicReader
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

# Prints `ready` when started and `term` on each SIGTERM, which it ignores: restarting it waits out the grace period.
SLOW_TO_STOP = (
    "import signal\nsignal.signal(signal.SIGTERM, lambda *_: print('term', flush=True))\n"
    "print('ready', flush=True)\nwhile True:\n    signal.pause()\n"
)


async def test_an_approved_restart_runs_once_and_a_repeat_gets_the_same_answer(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor,  # noqa: F811
) -> None:
    before = pid_of(web, "web")
    approved = approval(RESTART_WEB)
    async with running(agent_settings(services, kafka_config, key_prefix, tmp_path), redis_client):
        async with TopicReader(kafka_config, [kafka_config.topic(ACTIONS)]) as reader:
            async with EventPublisher(kafka_config, client_id="tests") as publisher:
                await publisher.publish(approved)
                await reader.until(lambda rs: len(answers_to(rs, approved)) >= 1, 60)
                await publisher.publish(approved)  # delivered again
                await reader.until(lambda rs: len(answers_to(rs, approved)) >= 2, 60)
            await reader.drain()

    first, second = answers_to(reader.records, approved)
    assert first.type == "action.executed", first
    assert second == first  # the recorded answer, same event id: nothing new downstream
    assert first.event_id == derived_event_id(approved.event_id, "outcome")
    assert (first.correlation_id, first.incident_id, first.produced_by) == (
        approved.correlation_id, approved.incident_id, "execution"
    )  # fmt: skip
    after = pid_of(web, "web")
    assert first.output == {"previous_pid": before, "pid": after}
    assert after is not None and after != before and process_alive(after)
    assert before is not None and not process_alive(before)
    await wait_until(lambda: starts(web, "web") == 2, what="the restarted web ready")
    assert starts(web, "web") == 2  # started, restarted once: the repeat ran nothing


@pytest.mark.parametrize("earlier_owner", ["execution-other/5c0ffee5c0ff", "SELF/earlier-life"])
async def test_an_unfinished_claim_is_answered_interrupted_and_nothing_runs(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor, earlier_owner: str,  # noqa: F811
) -> None:
    settings = agent_settings(services, kafka_config, key_prefix, tmp_path)
    earlier_owner = earlier_owner.replace("SELF", settings.instance_id)  # this very instance, before a crash
    before = pid_of(web, "web")
    approved = approval(RESTART_WEB)
    claims = IdempotencyStore(redis_client, key_prefix)
    assert (await claims.claim(approved.idempotency_key, earlier_owner)).first  # and then it crashed
    async with running(settings, redis_client):
        [answer] = await publish_and_read(kafka_config, approved)

    assert answer.type == "action.failed", answer
    assert answer.error.startswith("interrupted:") and earlier_owner in answer.error
    assert answer.error.endswith("outcome unknown; not run twice") and not answer.rolled_back
    assert pid_of(web, "web") == before and starts(web, "web") == 1
    again = await claims.claim(approved.idempotency_key, "tests")
    assert (again.state, again.owner) == ("in_progress", earlier_owner)  # left alone: its outcome is unknown


async def test_a_failed_step_is_rolled_back(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor,  # noqa: F811
) -> None:
    # `broken` is a managed process whose program does not exist: restarting it fails.
    write_model(web.state_dir / "broken.json", ManagedProcess(name="broken", launch=LaunchSpec(argv=["/nonexistent"])))
    approved = approval(PlanStep(action="restart_process", target="broken"), rollback=[RESTART_WEB])
    async with running(agent_settings(services, kafka_config, key_prefix, tmp_path), redis_client):
        [answer] = await publish_and_read(kafka_config, approved)

    assert answer.type == "action.failed" and answer.rolled_back, answer
    assert answer.error.startswith("failed: cannot start broken") and answer.error.endswith("rolled back (1 steps)")
    await wait_until(lambda: starts(web, "web") == 2, what="web restarted by the rollback")


async def test_a_crash_mid_action_is_answered_interrupted_after_the_restart(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor,  # noqa: F811
) -> None:
    await web.start("slow", python_argv(SLOW_TO_STOP))
    await wait_until(lambda: starts(web, "slow") == 1, what="slow ready")
    before = pid_of(web, "slow")
    settings = agent_settings(services, kafka_config, key_prefix, tmp_path)
    warm_up = approval(PlanStep(action="restart_process", target="nobody"))  # refused at once
    slow = approval(
        PlanStep(action="restart_process", target="slow", params={"grace_s": 60}, timeout_s=90),
        incident_id=warm_up.incident_id,  # same partition: the warm-up's commit is where the restart resumes
    )
    agents: list[subprocess.Popen] = []
    try:
        async with TopicReader(kafka_config, [kafka_config.topic(ACTIONS)]) as reader:
            agents.append(_start_agent(settings, services, tmp_path / "agent-1.log"))
            await _until_ready(redis_client, key_prefix, settings.instance_id)
            async with EventPublisher(kafka_config, client_id="tests") as publisher:
                await publisher.publish(warm_up)
                await reader.until(lambda rs: len(answers_to(rs, warm_up)) >= 1, 60)
                await publisher.publish(slow)
            await wait_until(file_contains(web.log_file("slow"), "term"), timeout_s=60, what="the agent mid-restart")
            agents[0].kill()  # SIGKILL: no clean-up, its transaction left open
            assert await asyncio.to_thread(agents[0].wait, 30) == -signal.SIGKILL
            agents.append(_start_agent(settings, services, tmp_path / "agent-2.log"))
            await reader.until(lambda rs: len(answers_to(rs, slow)) >= 1, 120)
            await reader.drain()
        agents[1].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(agents[1].wait, 60) == 0
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()

    [answer] = answers_to(reader.records, slow)
    assert answer.type == "action.failed", answer
    assert answer.error.startswith(f"interrupted: an earlier attempt ({settings.instance_id}/"), answer.error
    assert before is not None and pid_of(web, "slow") == before and process_alive(before)
    assert starts(web, "slow") == 1  # the restart the dead agent began was not begun again


def _start_agent(settings: ExecutionSettings, services, log_path: Path) -> subprocess.Popen:  # noqa: ANN001
    env = {
        **os.environ,
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": settings.kafka.topic_namespace,
        "OPSWARM_REDIS_URL": services.redis_url,
        "OPSWARM_REDIS_PREFIX": settings.redis_prefix,
        "OPSWARM_INSTANCE_ID": settings.instance_id,
        "OPSWARM_CONSUMER_GROUP": settings.consumer_group,
        "OPSWARM_CONSUMER_START": "latest",
        "OPSWARM_HTTP_PORT": "0",
        "OPSWARM_HEARTBEAT_EVERY_S": "0.2",
        "OPSWARM_SUPERVISOR_DIR": str(settings.supervisor_dir),
        "OPSWARM_DEPLOYMENTS_DIR": str(settings.deployments_dir),
        "OPSWARM_CLEAR_DISK_ROOTS": f'["{settings.clear_disk_roots[0]}"]',
        "OPSWARM_PROMETHEUS_URL": "",
    }
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "agents.execution"], cwd=REPO, env=env, stdout=log, stderr=log)


async def _until_ready(redis: Redis, key_prefix: str, instance_id: str) -> None:
    """Wait for the agent's heartbeat to name its HTTP port, then for /readyz (its consumer has partitions)."""
    heartbeats = HeartbeatRegistry(redis, key_prefix)

    async def ready() -> bool:
        beat = next((r for r in await heartbeats.live() if r.instance_id == instance_id), None)
        port = beat.details.get("http_port") if beat else None
        if port is None:
            return False
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(ready, 60)
