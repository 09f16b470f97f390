"""`python -m scheduler.agent_supervisor SPEC.json`: keeps the agent processes of a spec running.

Each agent is a child process in a process group of its own, its output appended to its log file. One that
exits without being asked (a crash, kill -9, even a clean exit) is started again after an exponential backoff
(`BackoffPolicy`); every change is written to the spec's state file. SIGTERM or SIGINT stops every agent
(SIGTERM to its group, then SIGKILL after `stop_timeout_s`), writes the final state and exits 0.

Children are waited on with asyncio's child watcher, never polled; the only timed waits are the backoff and
the stop timeout, and each of them ends early when a stop is requested.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bus.lifecycle import stop_on_signals
from bus.process_logging import configure_logging
from scheduler.agent_supervisor_state import AgentRunState, AgentSpec, SupervisorSpec, SupervisorState

log = logging.getLogger(__name__)

# After SIGKILL a process is gone as soon as the kernel reaps it; this only bounds a wait that cannot hang.
_KILL_WAIT_S = 5.0


class StateBoard:
    """The supervisor's state, written to the state file on every change (one writer: this process)."""

    def __init__(self, spec: SupervisorSpec) -> None:
        now = time.time()
        self._path = spec.state_file
        self.state = SupervisorState(
            supervisor_pid=os.getpid(),
            started_at=now,
            updated_at=now,
            agents={agent.name: AgentRunState(name=agent.name, argv=agent.argv) for agent in spec.agents},
        )
        self._write()

    def update(self, name: str, **changes: Any) -> AgentRunState:
        current = self.state.agents[name]
        updated = current.model_copy(update=changes)
        self.state.agents[name] = updated
        self._write()
        return updated

    def stopping(self) -> None:
        self.state.stopping = True
        self._write()

    def _write(self) -> None:
        self.state.updated_at = time.time()
        self.state.write_atomically(self._path)


async def supervise(
    spec: SupervisorSpec, stop: asyncio.Event, inherited_env: Mapping[str, str] | None = None
) -> SupervisorState:
    """Run every agent of `spec` until `stop` is set; then stop them all. The final state.

    Each agent gets `inherited_env` (the supervisor's own environment, read in `__main__`) with its spec's
    variables on top.
    """
    board = StateBoard(spec)
    log.info("supervisor started", extra={"agents": [agent.name for agent in spec.agents], "pid": os.getpid()})
    async with asyncio.TaskGroup() as group:
        for agent in spec.agents:
            group.create_task(_keep_running(agent, spec, board, stop, inherited_env or {}))
        group.create_task(_note_stopping(board, stop))
    log.info("supervisor stopped", extra={"pid": os.getpid()})
    return board.state


async def _note_stopping(board: StateBoard, stop: asyncio.Event) -> None:
    await stop.wait()
    board.stopping()


async def _keep_running(
    agent: AgentSpec, spec: SupervisorSpec, board: StateBoard, stop: asyncio.Event, inherited_env: Mapping[str, str]
) -> None:
    """Start `agent`, and start it again whenever it exits, until `stop`."""
    streak = 0
    restarts = 0
    while not stop.is_set():
        started = time.monotonic()
        process = await _start(agent, inherited_env)
        if process is None:
            exit_code = None
        else:
            board.update(
                agent.name, phase="running", pid=process.pid, started_at=time.time(), restarts=restarts,
                next_restart_at=None,
            )  # fmt: skip
            try:
                exited = await _exited_before_stop(process, stop)
            except BaseException:  # the supervisor itself is failing: leave no agent behind
                _signal_group(process.pid, signal.SIGKILL)
                raise
            if not exited:
                exit_code = await _stop_group(agent, process, spec.stop_timeout_s)
                board.update(agent.name, phase="stopped", pid=None, last_exit_code=exit_code, last_exit_at=time.time())
                return
            exit_code = process.returncode
        streak = spec.backoff.streak_after_exit(streak, time.monotonic() - started)
        delay = spec.backoff.delay(streak)
        log.warning(
            "agent exited; restarting after backoff",
            extra={"agent": agent.name, "exit_code": exit_code, "delay_s": delay, "streak": streak},
        )
        board.update(
            agent.name, phase="backoff", pid=None, last_exit_code=exit_code, last_exit_at=time.time(),
            next_restart_at=time.time() + delay,
        )  # fmt: skip
        if await _stop_within(stop, delay):
            break
        restarts += 1
    board.update(agent.name, phase="stopped", pid=None, next_restart_at=None)


async def _start(agent: AgentSpec, inherited_env: Mapping[str, str]) -> asyncio.subprocess.Process | None:
    """The agent's process, in a new session (its own process group); None when it cannot be started."""
    agent.log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**inherited_env, **agent.env}
    try:
        with agent.log_file.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *agent.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=agent.cwd,
                start_new_session=True,
            )
    except OSError as exc:
        log.error("agent could not be started", extra={"agent": agent.name, "argv0": agent.argv[0], "error": str(exc)})
        return None
    log.info("agent started", extra={"agent": agent.name, "pid": process.pid})
    return process


async def _exited_before_stop(process: asyncio.subprocess.Process, stop: asyncio.Event) -> bool:
    """Wait for the process to exit or for `stop`, whichever comes first; True when the process exited."""
    exited = asyncio.create_task(process.wait())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not exited.done():
            exited.cancel()
    return process.returncode is not None


async def _stop_group(agent: AgentSpec, process: asyncio.subprocess.Process, timeout_s: float) -> int | None:
    """SIGTERM the agent's process group, SIGKILL it after `timeout_s`; the agent's exit code."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            return await process.wait()
    except TimeoutError:
        log.warning("agent ignored SIGTERM; killing", extra={"agent": agent.name, "timeout_s": timeout_s})
    _signal_group(process.pid, signal.SIGKILL)
    async with asyncio.timeout(_KILL_WAIT_S):
        return await process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the agent leads its own group: start_new_session
    except ProcessLookupError:
        pass


async def _stop_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` unless `stop` is set first; True when stopping."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def main(spec: SupervisorSpec, inherited_env: Mapping[str, str]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await supervise(spec, stop, inherited_env)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m scheduler.agent_supervisor SPEC.json")
    supervisor_spec = SupervisorSpec.load(Path(sys.argv[1]))
    configure_logging(supervisor_spec.log_level)
    # Read once, here where the process is configured: the agents inherit it (PATH, HOME, ...).
    asyncio.run(main(supervisor_spec, dict(os.environ)))
