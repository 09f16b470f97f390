"""The agent supervisor with real agent processes: kill -9 → restarted with backoff; SIGTERM → all gone.

And `opswarm agents up|status|down` as a user runs them, with the monitoring agent only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bus.config import KafkaConfig
from deploy.localstack import procfs
from scheduler.agent_supervisor_state import AgentRunState, AgentSpec, BackoffPolicy, SupervisorSpec, SupervisorState
from scheduler.heartbeats import HeartbeatRegistry
from tests.integration.opswarm_cli import run_opswarm
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
_EXIT_TIMEOUT_S = 40.0


def _monitoring_env(services, kafka_config: KafkaConfig, prefix: str, run: str) -> dict[str, str]:  # noqa: ANN001
    return {
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka_config.topic_namespace,
        "OPSWARM_REDIS_URL": services.redis_url,
        "OPSWARM_REDIS_PREFIX": prefix,
        "OPSWARM_INSTANCE_ID": f"monitoring-{run}",
        "OPSWARM_CONSUMER_GROUP": f"monitoring-supervised-{run}",
        "OPSWARM_CONSUMER_START": "latest",
        "OPSWARM_HEARTBEAT_EVERY_S": "0.2",
        "OPSWARM_HTTP_PORT": "0",
    }


def _agent(state: Path, name: str) -> AgentRunState | None:
    read = SupervisorState.read(state)
    return read.agents.get(name) if read is not None else None


async def test_supervisor_restarts_a_killed_agent_and_stops_all_on_sigterm(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path  # noqa: ANN001
) -> None:
    run = uuid.uuid4().hex[:8]
    state_file = tmp_path / "state.json"
    spec = SupervisorSpec(
        state_file=state_file,
        backoff=BackoffPolicy(initial_s=0.2, max_s=2.0, reset_after_s=60.0),
        agents=[
            AgentSpec(
                name="monitoring", argv=[sys.executable, "-m", "agents.monitoring"],
                env=_monitoring_env(services, kafka_config, key_prefix, run), log_file=tmp_path / "monitoring.log",
                cwd=REPO,
            ),
            # One that cannot even start: the supervisor keeps backing off and keeps the other one running.
            AgentSpec(name="broken", argv=[str(tmp_path / "no-such-program")], log_file=tmp_path / "broken.log"),
        ],
    )  # fmt: skip
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    heartbeats = HeartbeatRegistry(redis_client, key_prefix)
    log = (tmp_path / "supervisor.log").open("wb")
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler.agent_supervisor", str(spec_file), cwd=REPO, stdout=log, stderr=log
    )
    try:

        async def beating_from(pid_of: dict[str, int]) -> bool:
            agent = _agent(state_file, "monitoring")
            if agent is None or agent.pid is None or agent.phase != "running":
                return False
            pid_of["monitoring"] = agent.pid
            return any(r.pid == agent.pid and r.instance_id == f"monitoring-{run}" for r in await heartbeats.live())

        first: dict[str, int] = {}
        await eventually(lambda: beating_from(first), 60)
        state = SupervisorState.read(state_file)
        assert state is not None and state.supervisor_pid == supervisor.pid
        assert state.agents["monitoring"].restarts == 0

        os.kill(first["monitoring"], signal.SIGKILL)
        second: dict[str, int] = {}

        async def restarted() -> bool:
            return await beating_from(second) and second["monitoring"] != first["monitoring"]

        await eventually(restarted, 60)
        agent = _agent(state_file, "monitoring")
        assert agent is not None
        assert (agent.restarts, agent.last_exit_code, agent.pid) == (1, -signal.SIGKILL, second["monitoring"])
        assert not procfs.is_alive(first["monitoring"])

        broken = _agent(state_file, "broken")
        assert broken is not None and broken.pid is None and broken.phase == "backoff"

        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), _EXIT_TIMEOUT_S) == 0
    finally:
        if supervisor.returncode is None:  # the test failed midway: still stop the agents it started
            supervisor.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(supervisor.wait(), _EXIT_TIMEOUT_S)
            except TimeoutError:
                supervisor.kill()
                await supervisor.wait()
        log.close()

    assert not procfs.is_alive(second["monitoring"])
    final = SupervisorState.read(state_file)
    assert final is not None and final.stopping
    assert {name: (a.phase, a.pid) for name, a in final.agents.items()} == {
        "monitoring": ("stopped", None), "broken": ("stopped", None)
    }  # fmt: skip
    assert final.agents["monitoring"].last_exit_code == 0  # the agent stopped cleanly on SIGTERM
    assert all(r.instance_id != f"monitoring-{run}" for r in await heartbeats.live())


async def test_agents_cli_up_status_down(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path  # noqa: ANN001
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        "OPSWARM_STATE_DIR": str(tmp_path),
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka_config.topic_namespace,
        "OPSWARM_REDIS_URL": services.redis_url,
        "COLUMNS": "200",
    }
    agent_env = _monitoring_env(services, kafka_config, key_prefix, run)
    flags = [arg for key, value in agent_env.items() for arg in ("--env", f"{key}={value}")]
    try:
        up = await run_opswarm("agents", "up", "--only", "monitoring", *flags, env=env)
        assert up.returncode == 0, up.describe()
        assert "running" in up.stdout and f"monitoring-{run}" in up.stdout
        state = SupervisorState.read(tmp_path / "agents" / "state.json")
        assert state is not None and list(state.agents) == ["monitoring"]
        assert oct((tmp_path / "agents" / "spec.json").stat().st_mode & 0o777) == "0o600"

        again = await run_opswarm("agents", "up", "--only", "monitoring", *flags, env=env)
        assert again.returncode == 0, again.describe()
        assert f"already running (pid {state.supervisor_pid})" in again.stdout
        checked = await run_opswarm("agents", "status", "--check", env=env)
        assert checked.returncode == 0, checked.describe()

        down = await run_opswarm("agents", "down", env=env)
        assert down.returncode == 0, down.describe()
        assert "stopped" in down.stdout
        assert not procfs.is_alive(state.supervisor_pid)
        assert not procfs.is_alive(state.agents["monitoring"].pid or 0)
        after = await run_opswarm("agents", "status", "--check", env=env)
        assert after.returncode == 1, after.describe()
    finally:
        await run_opswarm("agents", "down", env=env)
