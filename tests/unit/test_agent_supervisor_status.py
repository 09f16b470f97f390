"""`opswarm agents`: the spec written for the supervisor, and the status rows joining its state with heartbeats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from deploy.agents_cli import AGENT_NAMES, agent_rows, supervisor_spec
from deploy.operator_credentials import ensure_operator_credentials
from deploy.settings import Settings
from knowledge.llm_client import LlmConfig
from scheduler.agent_supervisor_state import AgentRunState, SupervisorSpec, SupervisorState
from scheduler.escalations.access_tokens import ApiToken, token_sha256
from scheduler.heartbeats import HeartbeatRecord

NOW = 1_000_000.0


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path, kafka={"bootstrap_servers": "127.0.0.1:29092"}, redis_url="redis://127.0.0.1:26379/0"
    )


def test_spec_lists_every_agent_with_the_environment_the_design_names(tmp_path: Path) -> None:
    spec = supervisor_spec(_settings(tmp_path), list(AGENT_NAMES), {})
    assert [agent.name for agent in spec.agents] == list(AGENT_NAMES)
    assert spec.state_file == tmp_path / "agents" / "state.json"
    ports = {agent.name: agent.env["OPSWARM_HTTP_PORT"] for agent in spec.agents}
    assert ports == {"monitoring": "9181", "diagnosis": "9182", "coordination": "9183", "execution": "9184",
                     "knowledge": "9185"}  # fmt: skip
    env = spec.agents[0].env
    assert env["OPSWARM_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:29092"
    assert env["OPSWARM_REDIS_URL"] == "redis://127.0.0.1:26379/0"
    assert env["OPSWARM_REDIS_PREFIX"] == "opswarm"
    assert json.loads(env["OPSWARM_CLEAR_DISK_ROOTS"]) == [str(tmp_path / "scenarios")]
    assert env["OPSWARM_SUPERVISOR_DIR"] == str(tmp_path / "targets")
    for name in ("OPSWARM_MONGO_URL", "OPSWARM_MONGO_DATABASE", "OPSWARM_QDRANT_PATH", "OPSWARM_PROMETHEUS_URL",
                 "OPSWARM_DEPLOYMENTS_DIR", "OPSWARM_LOG_ROOTS"):  # fmt: skip
        assert env[name], name
    assert spec.agents[2].argv[1:] == ["-m", "agents.coordination"]
    assert spec.agents[2].log_file == tmp_path / "logs" / "agent-coordination.log"
    assert SupervisorSpec.model_validate_json(spec.model_dump_json()) == spec  # what the supervisor reads back


@pytest.mark.parametrize("base_url", [None, "http://127.0.0.1:18090/v1"])
def test_the_agents_get_the_clis_model_settings_secret_included(tmp_path: Path, base_url: str | None) -> None:
    settings = _settings(tmp_path).model_copy(update={"llm": LlmConfig(
        base_url=base_url, model="m", api_key=SecretStr("sk-test"), function_calling=True, structured_output=True,
    )})  # fmt: skip
    for agent in supervisor_spec(settings, list(AGENT_NAMES), {}).agents:
        given = LlmConfig.model_validate_json(agent.env["OPSWARM_LLM"])
        assert (given.base_url, given.model, given.enabled) == (base_url, "m", base_url is not None)
        assert given.api_key is not None and given.api_key.get_secret_value() == "sk-test"


def test_coordination_gets_the_escalation_settings_and_the_local_operators_token(tmp_path: Path) -> None:
    alice = ApiToken(name="alice", role="viewer", sha256="a" * 64)
    settings = _settings(tmp_path).model_copy(update={"api_tokens": [alice],
                                                      "escalation_policy_file": Path("deploy/x.yaml")})  # fmt: skip
    env = supervisor_spec(settings, ["coordination"], {}).agents[0].env
    credentials = ensure_operator_credentials(tmp_path)
    tokens = [ApiToken.model_validate(t) for t in json.loads(env["OPSWARM_API_TOKENS"])]
    assert tokens == [alice, ApiToken(name="local-operator", role="approver", sha256=token_sha256(credentials.token))]
    assert env["OPSWARM_LINK_SECRET"] == credentials.link_secret and len(credentials.link_secret) >= 32
    assert env["OPSWARM_ESCALATION_POLICY_FILE"] == str(Path("deploy/x.yaml").resolve())
    for name in ("operator-token", "link-secret"):
        assert oct((tmp_path / "approvals" / name).stat().st_mode & 0o777) == "0o600"
    # Kept: the agents and `scenario run --approve-via web` agree on the same token across runs.
    assert ensure_operator_credentials(tmp_path) == credentials


def test_only_and_extra_env_narrow_and_override(tmp_path: Path) -> None:
    spec = supervisor_spec(_settings(tmp_path), ["knowledge", "monitoring"], {"OPSWARM_HTTP_PORT": "0", "X": "1"})
    assert [agent.name for agent in spec.agents] == ["monitoring", "knowledge"]  # the usual order
    assert all(agent.env["OPSWARM_HTTP_PORT"] == "0" and agent.env["X"] == "1" for agent in spec.agents)


def _beat(agent: str, pid: int, **details: object) -> HeartbeatRecord:
    return HeartbeatRecord(agent, f"{agent}-0", pid, NOW - 50, NOW - 1.5, "running", dict(details), 1.5)


def _state(**runs: AgentRunState) -> SupervisorState:
    return SupervisorState(supervisor_pid=1, started_at=NOW - 100, updated_at=NOW, agents=runs)


@pytest.mark.parametrize(
    ("run", "supervising", "beats", "status"),
    [
        (AgentRunState(name="monitoring", phase="running", pid=10, started_at=NOW - 30), True,
         [_beat("monitoring", 10)], "running"),
        # A live beat of an earlier process of the same agent does not count.
        (AgentRunState(name="monitoring", phase="running", pid=11, started_at=NOW - 1), True,
         [_beat("monitoring", 10)], "starting"),
        (AgentRunState(name="monitoring", phase="backoff", restarts=2), True, [], "restarting"),
        (AgentRunState(name="monitoring", phase="stopped"), True, [], "stopped"),
        # The state file of a supervisor that is gone says nothing about now.
        (AgentRunState(name="monitoring", phase="running", pid=10, started_at=NOW - 30), False,
         [_beat("monitoring", 10)], "stopped"),
        (None, True, [], "stopped"),
    ],
)  # fmt: skip
def test_status_of_one_agent(
    run: AgentRunState | None, supervising: bool, beats: list[HeartbeatRecord], status: str
) -> None:
    state = _state(monitoring=run) if run is not None else None
    [row] = agent_rows(["monitoring"], state, supervising, beats, NOW)
    assert row.status == status


def test_a_running_row_shows_the_heartbeat_details() -> None:
    run = AgentRunState(name="execution", phase="running", pid=42, started_at=NOW - 90, restarts=3)
    beats = [_beat("monitoring", 42), _beat("execution", 42, lag=7, http_port=9184)]
    rows = agent_rows(["execution", "knowledge"], _state(execution=run), True, beats, NOW)
    assert [(r.agent, r.status) for r in rows] == [("execution", "running"), ("knowledge", "stopped")]
    row = rows[0]
    assert (row.instance, row.pid, row.uptime_s, row.restarts, row.lag, row.beat_age_s, row.http_port) == (
        "execution-0", 42, 90.0, 3, 7, 1.5, 9184
    )
