"""The local process supervisor with real child processes: start, restart, stop, re-adoption, pid reuse."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.events import PlanStep
from execution.adapters.process_supervisor import LaunchSpec, ManagedProcess, ProcessSupervisor, SupervisorError
from execution.adapters.restart_process import RestartProcessAdapter
from execution.adapters.state_files import write_model
from tests.integration.execution_support import (
    IGNORE_SIGTERM,
    RUN_UNTIL_KILLED,
    file_contains,
    process_alive,
    process_argv,
    python_argv,
    wait_until,
)

# Starts a grandchild that runs until killed and prints its pid: stopping must take the whole group down.
WITH_GRANDCHILD = (
    "import subprocess, sys, signal\n"
    f"child = subprocess.Popen([sys.executable, '-c', {RUN_UNTIL_KILLED!r}])\n"
    "print('grandchild', child.pid, flush=True)\n"
    "signal.pause()\n"
)


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[ProcessSupervisor]:
    supervisor = ProcessSupervisor(tmp_path / "run", stop_timeout_s=5.0)
    yield supervisor
    cleanup = ProcessSupervisor(tmp_path / "run", stop_timeout_s=1.0)
    for name in cleanup.names():
        await cleanup.stop(name)


async def test_start_runs_the_argv_and_records_it(supervisor: ProcessSupervisor) -> None:
    argv = python_argv(RUN_UNTIL_KILLED, "web")
    started = await supervisor.start("web", argv)
    assert started.state == "running" and started.pid is not None
    assert process_alive(started.pid) and process_argv(started.pid) == argv
    await wait_until(file_contains(supervisor.log_file("web"), "ready"), what="child output in its log")
    status = supervisor.status("web")
    assert status is not None and status.state == "running" and status.pid == started.pid
    assert status.uptime_s is not None and status.uptime_s >= 0
    assert supervisor.names() == ["web"]


async def test_restart_gives_a_new_pid_and_the_old_one_is_gone(supervisor: ProcessSupervisor) -> None:
    first = await supervisor.start("web", python_argv(RUN_UNTIL_KILLED))
    second = await supervisor.restart("web")
    assert second.pid != first.pid
    assert first.pid is not None and not process_alive(first.pid)
    assert second.pid is not None and process_alive(second.pid)


async def test_stop_leaves_no_process_of_the_group(supervisor: ProcessSupervisor) -> None:
    started = await supervisor.start("web", python_argv(WITH_GRANDCHILD))
    log_file = supervisor.log_file("web")
    await wait_until(file_contains(log_file, "grandchild"), what="grandchild started")
    grandchild = int(log_file.read_text().split("grandchild")[1].split()[0])
    assert process_alive(grandchild)
    assert await supervisor.stop("web") == "stopped"
    assert started.pid is not None and not process_alive(started.pid)
    await wait_until(lambda: not process_alive(grandchild), what="grandchild gone")
    status = supervisor.status("web")
    assert status is not None and status.state == "stopped" and status.pid is None
    assert await supervisor.stop("web") == "not running"


async def test_a_process_ignoring_sigterm_is_killed(supervisor: ProcessSupervisor) -> None:
    started = await supervisor.start("stubborn", python_argv(IGNORE_SIGTERM))
    await wait_until(file_contains(supervisor.log_file("stubborn"), "ready"), what="SIGTERM ignored")
    assert await supervisor.stop("stubborn", timeout_s=0.3) == "killed"
    assert started.pid is not None and not process_alive(started.pid)


async def test_a_new_supervisor_adopts_running_processes(supervisor: ProcessSupervisor, tmp_path: Path) -> None:
    started = await supervisor.start("web", python_argv(RUN_UNTIL_KILLED))
    await supervisor.start("worker", python_argv(RUN_UNTIL_KILLED, "worker"))
    await supervisor.stop("worker")
    successor = ProcessSupervisor(tmp_path / "run")
    assert successor.adopted == ["web"]
    status = successor.status("web")
    assert status is not None and status.state == "running" and status.pid == started.pid
    restarted = await successor.restart("web")
    assert restarted.pid != started.pid
    assert started.pid is not None and not process_alive(started.pid)
    worker = successor.status("worker")
    assert worker is not None and worker.state == "stopped"


async def test_a_stale_pid_is_forgotten_and_the_process_can_start_again(
    supervisor: ProcessSupervisor, tmp_path: Path
) -> None:
    started = await supervisor.start("web", python_argv(RUN_UNTIL_KILLED))
    assert started.pid is not None
    os.kill(started.pid, 9)
    await wait_until(lambda: not process_alive(started.pid), what="killed child gone")
    successor = ProcessSupervisor(tmp_path / "run")
    assert successor.adopted == []
    status = successor.status("web")
    assert status is not None and status.state == "stopped"
    again = await successor.restart("web")
    assert again.pid is not None and process_alive(again.pid)


async def test_a_recycled_pid_is_never_taken_for_ours(tmp_path: Path) -> None:
    # The record names this very test process, with another command line: it must not be adopted nor signalled.
    record = ManagedProcess(
        name="web", launch=LaunchSpec(argv=["/bin/false"]), pid=os.getpid(), running_argv=["web"], start_ticks=1
    )
    (tmp_path / "run").mkdir()
    write_model(tmp_path / "run" / "web.json", record)
    supervisor = ProcessSupervisor(tmp_path / "run")
    assert supervisor.adopted == []
    status = supervisor.status("web")
    assert status is not None and status.state == "stopped"
    assert await supervisor.stop("web") == "not running"


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("web", ["/nonexistent/program"], "cannot start web"),
        ("../escape", [sys.executable], "invalid process name"),
        ("web", [], "empty argv"),
    ],
)
async def test_start_refuses_what_it_cannot_run(
    supervisor: ProcessSupervisor, name: str, argv: list[str], message: str
) -> None:
    with pytest.raises(SupervisorError, match=message):
        await supervisor.start(name, argv)


async def test_start_refuses_a_name_already_running(supervisor: ProcessSupervisor) -> None:
    await supervisor.start("web", python_argv(RUN_UNTIL_KILLED))
    with pytest.raises(SupervisorError, match="already running"):
        await supervisor.start("web", python_argv(RUN_UNTIL_KILLED))


async def test_restart_process_action_restarts_the_target(supervisor: ProcessSupervisor) -> None:
    first = await supervisor.start("web", python_argv(RUN_UNTIL_KILLED))
    adapter = RestartProcessAdapter(supervisor)
    result = await adapter.execute(PlanStep(action="restart_process", target="web"), timeout_s=10)
    assert result.status == "succeeded", result
    assert result.data["previous_pid"] == first.pid and result.data["pid"] != first.pid
    assert process_alive(result.data["pid"]) and first.pid is not None and not process_alive(first.pid)


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (PlanStep(action="restart_process", target="nobody"), "no managed process named 'nobody'"),
        (PlanStep(action="restart_process", target="web", params={"grace_s": -1}), "invalid params"),
    ],
)
async def test_restart_process_action_refuses(supervisor: ProcessSupervisor, step: PlanStep, error: str) -> None:
    result = await RestartProcessAdapter(supervisor).execute(step, timeout_s=5)
    assert result.status == "refused" and error in (result.error or "")
