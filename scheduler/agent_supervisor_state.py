"""What the agent supervisor is told (its spec) and what it tells (its state file), and its restart backoff.

The spec is JSON written by `opswarm agents up` (or a test): which agents to run, each with its argv, extra
environment and log file. The state file is rewritten atomically (temp file + rename) on every change, so a
reader (`opswarm agents status|down`) never sees half of it: the supervisor's pid, and per agent its pid,
argv, start time, restarts, last exit code and when the next restart is due.

Exit codes are as asyncio reports them: negative for a signal (-9 is SIGKILL).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AGENT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,40}$"


class BackoffPolicy(BaseModel):
    """Restart delays double from `initial_s` up to `max_s`; an agent that ran `reset_after_s` starts over."""

    model_config = ConfigDict(frozen=True)

    initial_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    reset_after_s: float = Field(default=60.0, gt=0)

    def delay(self, streak: int) -> float:
        """The wait before restarting after the `streak`-th exit in a row (1 = the first)."""
        if streak < 1:
            raise ValueError("a streak counts exits: it starts at 1")
        return min(self.max_s, self.initial_s * 2 ** min(streak - 1, 62))

    def streak_after_exit(self, streak: int, uptime_s: float) -> int:
        """The streak once an agent that had been up `uptime_s` exits: a healthy run starts it over."""
        return 1 if uptime_s >= self.reset_after_s else streak + 1


class AgentSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=AGENT_NAME_PATTERN)
    argv: list[str] = Field(min_length=1)
    # Added to the supervisor's own environment (which the agent otherwise inherits).
    env: dict[str, str] = {}
    log_file: Path
    cwd: Path | None = None


class SupervisorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    state_file: Path
    agents: list[AgentSpec] = Field(min_length=1)
    backoff: BackoffPolicy = BackoffPolicy()
    # On SIGTERM: how long each agent may take to stop before it is killed.
    stop_timeout_s: float = Field(default=15.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [agent.name for agent in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agent names must be unique")
        return self

    @classmethod
    def load(cls, path: Path) -> SupervisorSpec:
        return cls.model_validate_json(path.read_text())


AgentPhase = Literal["running", "backoff", "stopped"]


class AgentRunState(BaseModel):
    name: str
    phase: AgentPhase = "stopped"
    pid: int | None = None
    argv: list[str] = []
    started_at: float | None = None  # wall clock, of the current (or last) process
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    next_restart_at: float | None = None


class SupervisorState(BaseModel):
    supervisor_pid: int
    started_at: float
    updated_at: float
    stopping: bool = False
    agents: dict[str, AgentRunState] = {}

    def write_atomically(self, path: Path) -> None:
        """Replace `path` in one rename: a reader sees the old state or the new one, never a mix."""
        write_text_atomically(path, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> SupervisorState | None:
        """The state in `path`; None when there is none (or it is not a state file)."""
        try:
            return cls.model_validate_json(path.read_text())
        except (FileNotFoundError, ValidationError):
            return None


def write_text_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a temp file next to `path` with `mode`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as temp:
            temp.write(text)
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
