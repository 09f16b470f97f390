"""`opswarm agents up --replicas monitoring=N`: the supervisor's spec for several monitoring replicas, the
argument's errors, and the status rows of replicas."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.agent_replicas import MAX_REPLICAS, agent_of, parse_replicas
from deploy.agents_cli import AGENT_NAMES, agent_rows, agents_app, supervisor_spec
from deploy.settings import Settings
from scheduler.agent_supervisor_state import AgentRunState, SupervisorSpec, SupervisorState
from scheduler.heartbeats import HeartbeatRecord

NOW = 1_000_000.0


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path, kafka={"bootstrap_servers": "127.0.0.1:29092"}, redis_url="redis://127.0.0.1:26379/0"
    )


def test_three_monitoring_replicas_have_their_own_name_instance_port_and_log_and_one_group(tmp_path: Path) -> None:
    spec = supervisor_spec(_settings(tmp_path), list(AGENT_NAMES), {}, {"monitoring": 3})
    assert [agent.name for agent in spec.agents] == [
        "monitoring", "monitoring-1", "monitoring-2", "diagnosis", "coordination", "execution", "knowledge"
    ]  # fmt: skip
    monitoring = spec.agents[:3]
    assert [a.env["OPSWARM_INSTANCE_ID"] for a in monitoring] == ["monitoring-0", "monitoring-1", "monitoring-2"]
    assert [a.env["OPSWARM_HTTP_PORT"] for a in monitoring] == ["9181", "9191", "9192"]
    assert [a.log_file.name for a in monitoring] == [
        "agent-monitoring.log", "agent-monitoring-1.log", "agent-monitoring-2.log"
    ]  # fmt: skip
    assert all(a.argv[1:] == ["-m", "agents.monitoring"] for a in monitoring)
    # One consumer group: the agent's default, for every replica alike.
    assert all("OPSWARM_CONSUMER_GROUP" not in a.env for a in monitoring)
    assert {k: v for k, v in monitoring[1].env.items() if k not in ("OPSWARM_INSTANCE_ID", "OPSWARM_HTTP_PORT")} == {
        k: v for k, v in monitoring[0].env.items() if k not in ("OPSWARM_INSTANCE_ID", "OPSWARM_HTTP_PORT")
    }
    ports = {a.name: a.env["OPSWARM_HTTP_PORT"] for a in spec.agents}
    assert ports["diagnosis"] == "9182" and len(set(ports.values())) == len(ports)
    assert SupervisorSpec.model_validate_json(spec.model_dump_json()) == spec


def test_one_replica_is_the_spec_as_before(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    extra = {"OPSWARM_INSTANCE_ID": "monitoring-x"}
    plain = supervisor_spec(settings, ["monitoring"], extra)
    assert plain == supervisor_spec(settings, ["monitoring"], extra, {"monitoring": 1})
    [agent] = plain.agents
    assert (agent.name, agent.env["OPSWARM_INSTANCE_ID"], agent.env["OPSWARM_HTTP_PORT"]) == (
        "monitoring", "monitoring-x", "9181"
    )  # fmt: skip
    assert "OPSWARM_INSTANCE_ID" not in supervisor_spec(settings, ["monitoring"], {}).agents[0].env


def test_extra_env_applies_to_every_replica_but_cannot_merge_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    spec = supervisor_spec(settings, ["monitoring"], {"OPSWARM_HTTP_PORT": "0", "X": "1"}, {"monitoring": 2})
    assert [(a.env["OPSWARM_HTTP_PORT"], a.env["X"]) for a in spec.agents] == [("0", "1"), ("0", "1")]
    assert [a.env["OPSWARM_INSTANCE_ID"] for a in spec.agents] == ["monitoring-0", "monitoring-1"]
    with pytest.raises(ValueError, match="each replica has its own"):
        supervisor_spec(settings, ["monitoring"], {"OPSWARM_INSTANCE_ID": "m"}, {"monitoring": 2})
    with pytest.raises(ValueError, match="share one port"):
        supervisor_spec(settings, ["monitoring"], {"OPSWARM_HTTP_PORT": "9300"}, {"monitoring": 2})


def test_parse_replicas() -> None:
    everything = list(AGENT_NAMES)
    assert parse_replicas([], AGENT_NAMES, everything) == {}
    assert parse_replicas(["monitoring=3", "diagnosis=1"], AGENT_NAMES, everything) == {"monitoring": 3,
                                                                                         "diagnosis": 1}  # fmt: skip
    assert parse_replicas([f" monitoring = {MAX_REPLICAS} "], AGENT_NAMES, everything) == {"monitoring": MAX_REPLICAS}


@pytest.mark.parametrize(
    ("pairs", "started", "message"),
    [
        (["monitoring"], None, "wants NAME=N"),
        (["=3"], None, "wants NAME=N"),
        (["nobody=2"], None, "unknown agent 'nobody'"),
        (["diagnosis=2"], None, "only monitoring can run as several replicas for now; diagnosis runs once"),
        (["coordination=3"], None, "coordination runs once"),
        (["monitoring=0"], None, "at least 1"),
        (["monitoring=two"], None, "wants a whole number"),
        ([f"monitoring={MAX_REPLICAS + 1}"], None, "the alerts topic's partitions"),
        (["monitoring=2", "monitoring=3"], None, "given twice"),
        (["monitoring=2"], ["diagnosis"], "monitoring is not started"),
    ],
)  # fmt: skip
def test_replica_argument_errors(pairs: list[str], started: list[str] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_replicas(pairs, AGENT_NAMES, started if started is not None else list(AGENT_NAMES))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "--replicas", "execution=2"], "runs once"),
        (["up", "--only", "diagnosis", "--replicas", "monitoring=2"], "not started"),
        (["up", "--replicas", "monitoring=2", "--env", "OPSWARM_INSTANCE_ID=m"], "its own"),
    ],
)
def test_the_cli_refuses_bad_replicas_before_starting_anything(tmp_path: Path, argv: list[str], message: str) -> None:
    result = CliRunner().invoke(agents_app, argv, obj=_settings(tmp_path), env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "agents" / "spec.json").exists()


def test_agent_of_a_supervisor_name() -> None:
    assert [agent_of(n) for n in ("monitoring", "monitoring-1", "monitoring-12", "diagnosis", "diagnosis-1")] == [
        "monitoring", "monitoring", "monitoring", "diagnosis", "diagnosis-1"
    ]  # fmt: skip


def test_status_has_a_row_per_replica_with_its_own_heartbeat() -> None:
    runs = {
        "monitoring": AgentRunState(name="monitoring", phase="running", pid=10, started_at=NOW - 30),
        "monitoring-1": AgentRunState(name="monitoring-1", phase="running", pid=11, started_at=NOW - 20),
        "monitoring-2": AgentRunState(name="monitoring-2", phase="running", pid=12, started_at=NOW - 1),
    }
    state = SupervisorState(supervisor_pid=1, started_at=NOW - 100, updated_at=NOW, agents=runs)
    beats = [
        HeartbeatRecord("monitoring", f"monitoring-{k}", pid, NOW - 50, NOW - 1.0, "running", {"http_port": port}, 1.0)
        for k, pid, port in ((0, 10, 9181), (1, 11, 9191))
    ]
    rows = agent_rows(list(runs), state, True, beats, NOW)
    assert [(r.agent, r.status, r.instance, r.pid, r.http_port) for r in rows] == [
        ("monitoring", "running", "monitoring-0", 10, 9181),
        ("monitoring-1", "running", "monitoring-1", 11, 9191),
        ("monitoring-2", "starting", None, 12, None),  # no beat from its pid yet
    ]  # fmt: skip
