"""Agent replicas for `opswarm agents up --replicas NAME=N`: which agents may run several, their names and ports.

Only monitoring runs as several replicas for now: its replicas share one consumer group (Kafka spreads the
alerts topic's partitions over them) and everything they must agree on is in Redis. The other agents have not
been made to share their work (coordination is the only writer of incident state, knowledge holds a lock on its
local Qdrant directory) and run once.

Replica k of monitoring (0 <= k < N):

- supervisor name `monitoring` for k = 0 (exactly what one replica is), `monitoring-<k>` after (its log:
  `agent-monitoring-<k>.log`);
- instance id `monitoring-<k>` (`OPSWARM_INSTANCE_ID`, the agent's default for k = 0): it names the replica's
  Kafka transactional id, which fences a zombie of the same replica, so no two replicas may share it;
- HTTP port 9181 for k = 0 (the agents' usual ports), REPLICA_PORT_BASE + k after: 9191, 9192, ... 9195;
- the same consumer group (`OPSWARM_CONSUMER_GROUP`, the agent's default unless `--env` sets it for all).

At most as many replicas as the alerts topic has partitions: a replica beyond them would own none.
"""

from __future__ import annotations

from bus.topics import ALERTS

SCALABLE_AGENTS = ("monitoring",)
MAX_REPLICAS = ALERTS.partitions
REPLICA_PORT_BASE = 9190
INSTANCE_ID_ENV = "OPSWARM_INSTANCE_ID"
HTTP_PORT_ENV = "OPSWARM_HTTP_PORT"


def parse_replicas(pairs: list[str], known: tuple[str, ...], started: list[str]) -> dict[str, int]:
    """`["monitoring=3"]` -> {"monitoring": 3}; ValueError saying what is wrong (unknown agent, one not `started`,
    not a count, an agent that runs once only, more replicas than partitions, the same agent twice)."""
    replicas: dict[str, int] = {}
    for pair in pairs:
        name, sep, count_text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--replicas wants NAME=N, got {pair!r}")
        if name not in known:
            raise ValueError(f"--replicas: unknown agent {name!r}; known: {', '.join(known)}")
        if name not in started:
            raise ValueError(f"--replicas: {name} is not started (see --only)")
        if name in replicas:
            raise ValueError(f"--replicas: {name} is given twice")
        try:
            count = int(count_text.strip())
        except ValueError:
            raise ValueError(f"--replicas {name}=N wants a whole number, got {count_text!r}") from None
        if count < 1:
            raise ValueError(f"--replicas {name}={count}: at least 1")
        if count > 1 and name not in SCALABLE_AGENTS:
            raise ValueError(
                f"--replicas {name}={count}: only {', '.join(SCALABLE_AGENTS)} can run as several replicas for now; "
                f"{name} runs once"
            )
        if count > MAX_REPLICAS:
            raise ValueError(
                f"--replicas {name}={count}: at most {MAX_REPLICAS}, the alerts topic's partitions (a replica beyond "
                "them would get none)"
            )
        replicas[name] = count
    return replicas


def replica_name(agent: str, index: int) -> str:
    """The supervisor's name of replica `index`: the agent's own name for replica 0."""
    return agent if index == 0 else f"{agent}-{index}"


def agent_of(name: str) -> str:
    """The agent a supervisor name runs: "monitoring-2" -> "monitoring" (heartbeats carry the agent's name)."""
    agent, sep, index = name.rpartition("-")
    return agent if sep and agent in SCALABLE_AGENTS and index.isdigit() else name


def replica_env(agent: str, index: int, replicas: int, extra_env: dict[str, str]) -> dict[str, str]:
    """What replica `index` of `replicas` gets on top of `extra_env` (which wins for a single replica, as before);
    ValueError when `extra_env` would give several replicas one instance id or one fixed port."""
    if replicas == 1:
        return {}
    if INSTANCE_ID_ENV in extra_env:
        raise ValueError(f"--env {INSTANCE_ID_ENV} cannot be given with --replicas {agent}={replicas}: "
                         f"each replica has its own ({agent}-<k>)")  # fmt: skip
    if extra_env.get(HTTP_PORT_ENV, "0") != "0":
        raise ValueError(f"--env {HTTP_PORT_ENV}={extra_env[HTTP_PORT_ENV]} with --replicas {agent}={replicas}: "
                         "the replicas would share one port (0, a free port each, is fine)")  # fmt: skip
    env = {INSTANCE_ID_ENV: f"{agent}-{index}"}
    if index > 0 and HTTP_PORT_ENV not in extra_env:
        env[HTTP_PORT_ENV] = str(REPLICA_PORT_BASE + index)
    return env
