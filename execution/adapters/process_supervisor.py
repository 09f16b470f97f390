"""A local process supervisor: start, stop, restart and inspect named child processes.

Each managed process has a record `STATE/<name>.json` (its argv, cwd, env, and while it runs its pid, its argv as
/proc shows it and its start time) and a log `STATE/<name>.log` with its stdout and stderr. Children run in their
own session, so they outlive the supervisor; a new supervisor on the same state directory re-adopts every process
whose /proc identity (argv and start time) still matches its record, and forgets stale pids.

Stopping signals the process group: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from execution.adapters.process_identity import ProcessIdentity
from execution.adapters.state_files import read_model, write_model

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KILL_WAIT_S = 5.0
_EXEC_SETTLE_S = 5.0

StopOutcome = Literal["stopped", "killed", "not running"]


class SupervisorError(Exception):
    """A request the supervisor cannot carry out (unknown name, already running, cannot start, will not die)."""


class LaunchSpec(BaseModel):
    """How to start a managed process. `env` None inherits the supervisor's environment."""

    model_config = ConfigDict(frozen=True)

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None


class ManagedProcess(BaseModel):
    """The record of one managed process, as stored in its state file."""

    model_config = ConfigDict(frozen=True)

    name: str
    launch: LaunchSpec
    pid: int | None = None
    running_argv: list[str] | None = None
    start_ticks: int | None = None

    def live_identity(self) -> ProcessIdentity | None:
        """The process's identity while the recorded pid still is this process (same argv and start time)."""
        identity = ProcessIdentity.of(self.pid) if self.pid is not None else None
        if identity is None or (identity.argv, identity.start_ticks) != (self.running_argv, self.start_ticks):
            return None
        return identity

    def is_running(self) -> bool:
        return self.live_identity() is not None


class ProcessStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    state: Literal["running", "stopped"]
    pid: int | None
    uptime_s: float | None
    argv: list[str]


class ProcessSupervisor:
    """Managed child processes of one state directory."""

    def __init__(self, state_dir: Path, *, stop_timeout_s: float = 10.0, poll_interval_s: float = 0.05) -> None:
        self.state_dir = state_dir
        self.stop_timeout_s = stop_timeout_s
        self.poll_interval_s = poll_interval_s
        self._children: dict[int, asyncio.subprocess.Process] = {}  # by pid: the processes this instance started
        self._locks: dict[str, asyncio.Lock] = {}
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.adopted: list[str] = self._adopt()

    def names(self) -> list[str]:
        return sorted(path.stem for path in self.state_dir.glob("*.json"))

    def log_file(self, name: str) -> Path:
        """Where the stdout and stderr of `name` go (appended across restarts)."""
        return self.state_dir / f"{name}.log"

    def status(self, name: str) -> ProcessStatus | None:
        record = self._read(name)
        if record is None:
            return None
        identity = record.live_identity()
        return ProcessStatus(
            name=name,
            state="running" if identity else "stopped",
            pid=identity.pid if identity else None,
            uptime_s=identity.uptime_s() if identity else None,
            argv=record.launch.argv,
        )

    async def start(
        self, name: str, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> ProcessStatus:
        """Start `argv` as `name` (replacing the launch spec of a stopped one). Refuses a running name."""
        if not _NAME.match(name):
            raise SupervisorError(f"invalid process name {name!r}")
        if not argv:
            raise SupervisorError("empty argv")
        launch = LaunchSpec(argv=list(argv), cwd=str(cwd) if cwd else None, env=dict(env) if env is not None else None)
        async with self._lock(name):
            record = self._read(name)
            if record is not None and record.is_running():
                raise SupervisorError(f"{name} is already running as pid {record.pid}")
            return await self._launch_to_the_end(name, launch)

    async def stop(self, name: str, *, timeout_s: float | None = None) -> StopOutcome:
        """Stop `name`: SIGTERM to its process group, then SIGKILL after `timeout_s`. Unknown names raise."""
        async with self._lock(name):
            return await self._stop(self._require(name), timeout_s or self.stop_timeout_s)

    async def restart(self, name: str, *, timeout_s: float | None = None) -> ProcessStatus:
        """Stop `name` if it runs, then start it again from its recorded launch spec (a new pid)."""
        async with self._lock(name):
            record = self._require(name)
            await self._stop(record, timeout_s or self.stop_timeout_s)
            return await self._launch_to_the_end(name, record.launch)

    # ------------------------------------------------------------------ internals

    def _record_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _read(self, name: str) -> ManagedProcess | None:
        return read_model(self._record_file(name), ManagedProcess) if _NAME.match(name) else None

    def _require(self, name: str) -> ManagedProcess:
        record = self._read(name)
        if record is None:
            raise SupervisorError(f"no managed process named {name!r}")
        return record

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _adopt(self) -> list[str]:
        adopted = []
        for name in self.names():
            record = self._read(name)
            if record is None or record.pid is None:
                continue
            if record.is_running():
                log.info("managed process adopted", extra={"managed_process": name, "pid": record.pid})
                adopted.append(name)
            else:
                log.info("stale pid forgotten", extra={"managed_process": name, "pid": record.pid})
                write_model(self._record_file(name), ManagedProcess(name=name, launch=record.launch))
        return adopted

    async def _launch_to_the_end(self, name: str, launch: LaunchSpec) -> ProcessStatus:
        """Launch, and if the caller is cancelled meanwhile, still finish recording the pid before unlocking."""
        launching = asyncio.ensure_future(self._launch(name, launch))
        try:
            return await asyncio.shield(launching)
        except asyncio.CancelledError:
            await asyncio.wait([launching])
            raise

    async def _launch(self, name: str, launch: LaunchSpec) -> ProcessStatus:
        try:
            with self.log_file(name).open("ab") as output:
                process = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=launch.cwd,
                    env=launch.env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise SupervisorError(f"cannot start {name}: {launch.argv[0]}: {exc.strerror or exc}") from exc
        self._children = {pid: child for pid, child in self._children.items() if child.returncode is None}
        self._children[process.pid] = process
        identity = await self._identity_after_exec(process)
        if identity is None:
            if process.returncode is None:  # alive but not showing its argv after all this time: give up on it
                process.kill()
            raise SupervisorError(
                f"{name} did not come up (exit status {process.returncode}); see {self.log_file(name)}"
            )
        record = ManagedProcess(
            name=name, launch=launch, pid=identity.pid, running_argv=identity.argv, start_ticks=identity.start_ticks
        )
        write_model(self._record_file(name), record)
        log.info("managed process started", extra={"managed_process": name, "pid": process.pid})
        return ProcessStatus(name=name, state="running", pid=process.pid, uptime_s=0.0, argv=launch.argv)

    async def _identity_after_exec(self, process: asyncio.subprocess.Process) -> ProcessIdentity | None:
        """The new process's identity. Right after exec /proc may still show no argv for a moment (the kernel
        closes the exec pipe before it sets the new argv up), so poll until it shows, or the process is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EXEC_SETTLE_S
        while (identity := ProcessIdentity.of(process.pid)) is None:
            if process.returncode is not None or loop.time() >= deadline:
                return None
            await asyncio.sleep(self.poll_interval_s)
        return identity

    async def _stop(self, record: ManagedProcess, timeout_s: float) -> StopOutcome:
        outcome: StopOutcome = "not running"
        pid = record.pid
        if pid is not None and record.is_running():
            _signal_group(pid, signal.SIGTERM)
            outcome = "stopped"
            if not await self._wait_gone(record, timeout_s):
                log.warning("process ignored SIGTERM, killing", extra={"managed_process": record.name, "pid": pid})
                _signal_group(pid, signal.SIGKILL)
                outcome = "killed"
                if not await self._wait_gone(record, _KILL_WAIT_S):
                    raise SupervisorError(f"{record.name} (pid {pid}) survived SIGKILL")
            log.info("managed process stopped", extra={"managed_process": record.name, "pid": pid, "how": outcome})
        write_model(self._record_file(record.name), ManagedProcess(name=record.name, launch=record.launch))
        return outcome

    async def _wait_gone(self, record: ManagedProcess, timeout_s: float) -> bool:
        assert record.pid is not None
        child = self._children.get(record.pid)
        if child is not None:  # ours: wait for it, which also reaps it
            try:
                await asyncio.wait_for(child.wait(), timeout_s)
            except TimeoutError:
                return False
            del self._children[record.pid]
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while record.is_running():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.poll_interval_s)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group `pid` leads (it was started in its own session), or only `pid` if it left it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
