"""`opswarm agents up|down|status`: the five agent processes, kept running by a detached supervisor.

`up` writes the supervisor's spec to `<state_dir>/agents/spec.json` (every agent's argv, log file and the
environment derived from the CLI's settings), launches `python -m scheduler.agent_supervisor` in a session of
its own (pid file `<state_dir>/run/agents-supervisor.pid`, log `<state_dir>/logs/agents-supervisor.log`) and
waits until every agent beats in Redis. The supervisor writes `<state_dir>/agents/state.json`; `status` joins it
with the live heartbeats. An agent counts as up only when its live heartbeat comes from the pid the supervisor
started, so a beat left by a previous process does not pass for it. `--replicas monitoring=3` runs several
monitoring replicas in one consumer group (see agent_replicas), each a row of `status`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from bus.admin import ensure_topics
from deploy.agent_replicas import agent_of, parse_replicas, replica_env, replica_name
from deploy.console_reports import _uptime  # the same format as `opswarm status`
from deploy.localstack.processes import ProcessRecord, RunDir, spawn, tail, terminate
from deploy.operator_credentials import OPERATOR, ensure_operator_credentials
from deploy.settings import CHECKOUT_DIR, Settings
from scheduler.agent_settings import AgentSettings
from scheduler.agent_supervisor_state import AgentSpec, SupervisorSpec, SupervisorState, write_text_atomically
from scheduler.escalations.access_tokens import ApiToken, token_sha256
from scheduler.heartbeats import HeartbeatRecord, HeartbeatRegistry
from scheduler.redis_area import DEFAULT_PREFIX

AGENT_NAMES = ("monitoring", "diagnosis", "coordination", "execution", "knowledge")
# Each agent's /healthz, /readyz and /metrics (the agents' own defaults, given explicitly).
HTTP_PORTS = {name: 9181 + index for index, name in enumerate(AGENT_NAMES)}
SUPERVISOR = "agents-supervisor"
_HEARTBEAT_TTL_S = float(AgentSettings.model_fields["heartbeat_ttl_s"].default)
_REDIS_TIMEOUT_S = 5.0
_POLL_S = 0.5
# The supervisor gives each agent this long to stop (then kills it); `down` waits for that and a margin.
_AGENT_STOP_TIMEOUT_S = 15.0
_SUPERVISOR_STOP_TIMEOUT_S = _AGENT_STOP_TIMEOUT_S + 10.0

agents_app = typer.Typer(no_args_is_help=True, help="The agent processes, kept running by a detached supervisor.")
console = Console(highlight=False)


@dataclass(frozen=True)
class AgentsHome:
    """Where the supervisor's files of one state directory are."""

    state_dir: Path

    @property
    def spec_file(self) -> Path:
        return self.state_dir / "agents" / "spec.json"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "agents" / "state.json"

    @property
    def supervisor_log(self) -> Path:
        return self.state_dir / "logs" / f"{SUPERVISOR}.log"

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.state_dir / "run")

    def agent_log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"agent-{name}.log"


def agent_env(settings: Settings) -> dict[str, str]:
    """The environment every agent gets, derived from the CLI's settings (absolute paths: cwd does not matter)."""
    state = settings.state_dir
    env = {
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": settings.kafka.topic_namespace,
        "OPSWARM_REDIS_URL": settings.redis_dsn(),
        "OPSWARM_REDIS_PREFIX": DEFAULT_PREFIX,
        "OPSWARM_MONGO_URL": settings.mongo_dsn(),
        "OPSWARM_MONGO_DATABASE": "opswarm",
        # A directory of its own: Qdrant's local mode locks it, and `opswarm doctor` opens the parent.
        "OPSWARM_QDRANT_PATH": str(settings.qdrant_dir() / "knowledge"),
        "OPSWARM_PROMETHEUS_URL": settings.prometheus_url(),
        "OPSWARM_SUPERVISOR_DIR": str(state / "targets"),
        "OPSWARM_DEPLOYMENTS_DIR": str(state / "deployments"),
        "OPSWARM_CLEAR_DISK_ROOTS": json.dumps([str(state / "scenarios")]),
        # The target processes' logs are written by the process supervisor, in its directory.
        "OPSWARM_LOG_ROOTS": json.dumps([str(state / "targets")]),
        # A group without committed offsets starts at the end of its topics: a local swarm started for the first
        # time acts on what happens from then on, not on the history tests and earlier runs left in the topics.
        # After that, committed offsets rule (nothing is missed across restarts and crashes).
        "OPSWARM_CONSUMER_START": "latest",
    }
    embedding = settings.embedding.model_dump(mode="json", exclude={"openai_api_key"})
    if settings.embedding.openai_api_key is not None:
        embedding["openai_api_key"] = settings.embedding.openai_api_key.get_secret_value()
    env["OPSWARM_EMBEDDING"] = json.dumps(embedding)
    llm = settings.llm.model_dump(mode="json", exclude={"api_key"})
    if settings.llm.api_key is not None:
        llm["api_key"] = settings.llm.api_key.get_secret_value()
    env["OPSWARM_LLM"] = json.dumps(llm)
    env.update(escalation_env(settings))
    if settings.qdrant_url:
        env["OPSWARM_QDRANT_URL"] = settings.qdrant_url
    if settings.qdrant_api_key is not None:
        env["OPSWARM_QDRANT_API_KEY"] = settings.qdrant_api_key.get_secret_value()
    return env


def escalation_env(settings: Settings) -> dict[str, str]:
    """Coordination's escalation settings: the policy file, who may answer (the configured tokens and the local
    operator's), and the link key."""
    credentials = ensure_operator_credentials(settings.state_dir)
    operator = ApiToken(name=OPERATOR, role="approver", sha256=token_sha256(credentials.token))
    tokens = [*settings.api_tokens, operator]
    secret = settings.link_secret.get_secret_value() if settings.link_secret is not None else credentials.link_secret
    env = {
        "OPSWARM_API_TOKENS": json.dumps([token.model_dump() for token in tokens]),
        "OPSWARM_LINK_SECRET": secret,
        "OPSWARM_PUBLIC_URL": f"http://127.0.0.1:{HTTP_PORTS['coordination']}",
    }
    if settings.escalation_policy_file is not None:
        env["OPSWARM_ESCALATION_POLICY_FILE"] = str(settings.escalation_policy_file.resolve())
    return env


def supervisor_spec(
    settings: Settings, names: list[str], extra_env: dict[str, str], replicas: dict[str, int] | None = None
) -> SupervisorSpec:
    """The spec for `names` (in their usual order), `replicas[name]` processes of each (default 1: see
    agent_replicas); `extra_env` comes last, so it wins, except over what tells replicas apart (ValueError)."""
    home = AgentsHome(settings.state_dir)
    base = agent_env(settings)
    counts = replicas or {}
    agents = [
        AgentSpec(
            name=replica_name(name, index),
            argv=[sys.executable, "-m", f"agents.{name}"],
            env={**base, "OPSWARM_HTTP_PORT": str(HTTP_PORTS[name]), **extra_env,
                 **replica_env(name, index, counts.get(name, 1), extra_env)},  # fmt: skip
            log_file=home.agent_log(replica_name(name, index)),
            cwd=CHECKOUT_DIR,
        )
        for name in AGENT_NAMES
        if name in names
        for index in range(counts.get(name, 1))
    ]
    return SupervisorSpec(state_file=home.state_file, agents=agents, stop_timeout_s=_AGENT_STOP_TIMEOUT_S)


def supervisor_argv(spec_file: Path) -> list[str]:
    return [sys.executable, "-m", "scheduler.agent_supervisor", str(spec_file)]


@dataclass(frozen=True)
class AgentRow:
    agent: str
    status: str  # "running", "starting", "restarting", "stopped"
    instance: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int = 0
    lag: int | None = None
    beat_age_s: float | None = None
    http_port: int | None = None


def agent_rows(
    names: list[str], state: SupervisorState | None, supervising: bool, beats: list[HeartbeatRecord], now: float
) -> list[AgentRow]:
    """One row per expected agent (replica): the supervisor's view of its process joined with its live heartbeat."""
    rows = []
    for name in names:
        run = state.agents.get(name) if state is not None else None
        if run is None:
            rows.append(AgentRow(name, "stopped"))
            continue
        agent = agent_of(name)  # a replica beats as its agent, with an instance id of its own
        beat = next((b for b in beats if b.agent == agent and b.pid == run.pid), None) if run.pid else None
        if not supervising or run.phase == "stopped":
            status = "stopped"
        elif run.phase == "backoff":
            status = "restarting"
        else:
            status = "running" if beat is not None else "starting"
        running = status in ("running", "starting")
        rows.append(
            AgentRow(
                agent=name,
                status=status,
                instance=beat.instance_id if beat else None,
                pid=run.pid if running else None,
                uptime_s=now - run.started_at if running and run.started_at else None,
                restarts=run.restarts,
                lag=beat.details.get("lag") if beat else None,
                beat_age_s=beat.age_s if beat else None,
                http_port=beat.details.get("http_port") if beat else None,
            )
        )
    return rows


def rows_table(title: str, rows: list[AgentRow]) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ("agent", "instance", "pid", "uptime", "restarts", "lag", "last beat", "http port", "status")
    for column in columns:
        table.add_column(column, justify="right" if column in ("pid", "restarts", "lag", "http port") else "left")
    styles = {"running": "green", "starting": "yellow", "restarting": "bold red", "stopped": "dim"}
    for row in rows:
        table.add_row(
            row.agent,
            row.instance or "-",
            _or_dash(row.pid),
            _uptime(row.uptime_s),
            str(row.restarts),
            _or_dash(row.lag),
            f"{row.beat_age_s:.1f}s ago" if row.beat_age_s is not None else "-",
            _or_dash(row.http_port),
            f"[{styles.get(row.status, 'bold red')}]{row.status}[/]",
        )
    return table


def _settings_and_home(ctx: typer.Context) -> tuple[Settings, AgentsHome]:
    settings = ctx.find_object(Settings)
    assert settings is not None, "deploy.cli.main passes the Settings as the context object"
    return settings, AgentsHome(settings.state_dir)


@agents_app.command()
def up(
    ctx: typer.Context,
    only: list[str] = typer.Option([], "--only", help="Start only this agent (repeatable)."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for every agent's environment (repeatable)."),
    replicas: list[str] = typer.Option([], "--replicas", help="NAME=N processes of an agent (only monitoring >1)."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds to wait for every agent's heartbeat."),
) -> None:
    """Start the agents under a detached supervisor (nothing happens if it runs already); wait for them."""
    settings, home = _settings_and_home(ctx)
    unknown = sorted(set(only) - set(AGENT_NAMES))
    if unknown:
        raise typer.BadParameter(f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(AGENT_NAMES)}")
    names = list(only) or list(AGENT_NAMES)
    try:
        spec = supervisor_spec(settings, names, _parse_env(env), parse_replicas(replicas, AGENT_NAMES, names))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    running = _running_supervisor(home)
    if running is not None:
        console.print(f"agents supervisor already running (pid {running.pid}); `agents down` first to change it")
        console.print(rows_table("opswarm agents", asyncio.run(_rows(home, settings))))
        return
    came_up, rows = asyncio.run(_start_supervisor(home, settings, spec, timeout_s))
    console.print(rows_table(f"opswarm agents up ({settings.state_dir})", rows))
    if not came_up:
        typer.echo(f"agents did not all come up within {timeout_s:g} s; the supervisor keeps trying", err=True)
        for log_file in (home.supervisor_log, *(agent.log_file for agent in spec.agents)):
            typer.echo(f"--- {log_file} (last lines) ---\n{tail(log_file)}", err=True)
        raise typer.Exit(1)


@agents_app.command()
def down(ctx: typer.Context) -> None:
    """Stop the supervisor (it stops every agent), and any agent it left behind."""
    settings, home = _settings_and_home(ctx)
    state = SupervisorState.read(home.state_file)  # before stopping: the final state names no pids
    record = home.run_dir.read(SUPERVISOR)
    outcome, leftovers = asyncio.run(_stop_supervisor(home, record))
    table = Table(title=f"opswarm agents down ({settings.state_dir})", title_justify="left")
    for column in ("process", "pid", "result"):
        table.add_column(column)
    table.add_row("supervisor", _or_dash(record.pid if record else None), outcome)
    stopped_by_supervisor = outcome in ("stopped", "killed")
    for run in state.agents.values() if state is not None else []:
        result = leftovers.get(run.name, "stopped" if run.pid and stopped_by_supervisor else "not running")
        table.add_row(run.name, _or_dash(run.pid), result)
    console.print(table)


@agents_app.command()
def status(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Exit 1 unless every expected agent is running."),
) -> None:
    """Each agent: pid, uptime, restarts, lag, last heartbeat, HTTP port and status."""
    settings, home = _settings_and_home(ctx)
    rows = asyncio.run(_rows(home, settings))
    supervisor = _running_supervisor(home)
    where = f"supervisor pid {supervisor.pid}" if supervisor else "supervisor not running"
    console.print(rows_table(f"opswarm agents ({settings.state_dir}, {where})", rows))
    if check and any(row.status != "running" for row in rows):
        raise typer.Exit(1)


async def _start_supervisor(
    home: AgentsHome, settings: Settings, spec: SupervisorSpec, timeout_s: float
) -> tuple[bool, list[AgentRow]]:
    """Stop what a killed supervisor left, create the topics of the namespace, write the spec, launch the
    supervisor and wait for the agents."""
    for name, result in await _stop_leftover_agents(home):
        console.print(f"leftover agent {name}: {result}")
    try:
        await asyncio.wait_for(ensure_topics(settings.kafka), settings.kafka.connect_timeout_s * 2)
    except (KafkaError, OSError, TimeoutError) as exc:
        typer.echo(
            f"cannot create the topics on {settings.kafka.bootstrap_servers} ({exc!r}): is `make up` done?", err=True
        )
        raise typer.Exit(1) from exc
    # The environment holds service URLs, which may carry credentials: readable by the owner only.
    write_text_atomically(home.spec_file, spec.model_dump_json(indent=2), mode=0o600)
    argv = supervisor_argv(home.spec_file)
    process = spawn(argv, log_file=home.supervisor_log, cwd=CHECKOUT_DIR)
    supervisor = ProcessRecord(process.pid, argv, [])
    home.run_dir.write(SUPERVISOR, supervisor)
    # Alive as our child (poll), not by its command line: until it has exec'd, that is still ours.
    came_up = await _wait_until_up(home, settings, lambda: process.poll() is None, timeout_s)
    return came_up, await _rows(home, settings)


async def _stop_supervisor(home: AgentsHome, record: ProcessRecord | None) -> tuple[str, dict[str, str]]:
    """SIGTERM the supervisor and wait (it stops its agents first), then stop any agent left; what happened."""
    outcome = await terminate(record, _SUPERVISOR_STOP_TIMEOUT_S) if record is not None else "not running"
    home.run_dir.remove(SUPERVISOR)
    return outcome, dict(await _stop_leftover_agents(home))


def _running_supervisor(home: AgentsHome) -> ProcessRecord | None:
    record = home.run_dir.read(SUPERVISOR)
    return record if record is not None and record.is_running() else None


async def _rows(home: AgentsHome, settings: Settings) -> list[AgentRow]:
    """The status rows of the agents the current spec names (all five when there is no spec)."""
    spec = _read_spec(home)
    names = [agent.name for agent in spec.agents] if spec is not None else list(AGENT_NAMES)
    beats = await _live_beats(spec, settings)
    state = SupervisorState.read(home.state_file)
    return agent_rows(names, state, _running_supervisor(home) is not None, beats, time.time())


async def _live_beats(spec: SupervisorSpec | None, settings: Settings) -> list[HeartbeatRecord]:
    """Live heartbeats where the agents were told to beat (the spec's Redis and prefix); [] if Redis is away."""
    env = spec.agents[0].env if spec is not None else {}
    redis = Redis.from_url(
        env.get("OPSWARM_REDIS_URL", settings.redis_dsn()),
        socket_timeout=_REDIS_TIMEOUT_S,
        socket_connect_timeout=_REDIS_TIMEOUT_S,
    )
    try:
        registry = HeartbeatRegistry(redis, env.get("OPSWARM_REDIS_PREFIX", DEFAULT_PREFIX), _HEARTBEAT_TTL_S)
        return await registry.live()
    except (RedisError, OSError, TimeoutError):
        return []
    finally:
        await redis.aclose()


async def _wait_until_up(
    home: AgentsHome, settings: Settings, supervisor_alive: Callable[[], bool], timeout_s: float
) -> bool:
    """Poll until every agent of the spec is running; False on timeout or when the supervisor died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and supervisor_alive():
        if all(row.status == "running" for row in await _rows(home, settings)):
            return True
        await asyncio.sleep(_POLL_S)
    return False


async def _stop_leftover_agents(home: AgentsHome) -> list[tuple[str, str]]:
    """Stop agents of the last state still running without their supervisor (it was killed); (name, result)."""
    state = SupervisorState.read(home.state_file)
    if state is None or _running_supervisor(home) is not None:
        return []
    results = []
    for run in state.agents.values():
        record = ProcessRecord(run.pid, run.argv, []) if run.pid else None
        if record is not None and record.is_running():
            results.append((run.name, await terminate(record, _AGENT_STOP_TIMEOUT_S)))
    return results


def _read_spec(home: AgentsHome) -> SupervisorSpec | None:
    try:
        return SupervisorSpec.load(home.spec_file)
    except (FileNotFoundError, ValueError):
        return None


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)
