"""Allowlisted scripts and diagnostic commands as real child processes: what is listed runs, nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.events import PlanStep
from execution.adapters.scripts import AllowlistedScript, RunAllowlistedScriptAdapter, ScriptAllowlist
from execution.catalog import default_catalog
from execution.diagnostics import DiagnosticAllowlist
from execution.executor import ActionExecutor, BackoffPolicy
from tests.integration.execution_support import process_alive, write_script

ECHO = """
import sys
print("args:", " ".join(sys.argv[1:]))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""
HANG = """
import os, pathlib, signal, sys
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
while True:
    signal.pause()
"""
FLAKY = """
import pathlib, sys
counter = pathlib.Path(sys.argv[1])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
sys.exit(0 if runs >= int(sys.argv[2]) else 1)
"""
CHATTY = """
import sys
sys.stdout.write("y" * 100_000)
"""


def run(script: str, *args: str) -> PlanStep:
    return PlanStep(action="run_allowlisted_script", target="web", params={"script": script, "args": list(args)})


@pytest.fixture
def adapter(tmp_path: Path) -> RunAllowlistedScriptAdapter:
    allowlist = ScriptAllowlist(
        scripts=[
            AllowlistedScript(
                name="echo", path=write_script(tmp_path / "echo.py", ECHO), arg_patterns=[r"[a-z]+", r"[0-9]"]
            ),
            AllowlistedScript(name="hang", path=write_script(tmp_path / "hang.py", HANG), arg_patterns=[r"/.+"]),
            AllowlistedScript(
                name="flaky", path=write_script(tmp_path / "flaky.py", FLAKY), arg_patterns=[r"/.+", r"[0-9]"]
            ),
            AllowlistedScript(name="chatty", path=write_script(tmp_path / "chatty.py", CHATTY)),
            AllowlistedScript(name="gone", path=tmp_path / "gone.py"),
        ],
        output_limit=1000,
    )
    return RunAllowlistedScriptAdapter(allowlist)


async def test_a_listed_script_runs_with_its_args(adapter: RunAllowlistedScriptAdapter) -> None:
    result = await adapter.execute(run("echo", "hello"), timeout_s=10)
    assert result.status == "succeeded", result
    assert result.data["script"] == "echo" and result.data["exit_code"] == 0
    assert result.data["stdout"] == "args: hello\n" and result.data["stderr"] == "to stderr\n"


async def test_a_non_zero_exit_fails(adapter: RunAllowlistedScriptAdapter) -> None:
    result = await adapter.execute(run("echo", "oops", "3"), timeout_s=10)
    assert result.status == "failed" and result.data["exit_code"] == 3
    assert "exit code 3" in (result.error or "")


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (run("rm", "-rf", "/"), "'rm' is not in the allowlist"),
        (run("echo", "Hello; rm -rf /"), "argument 1 of echo does not match"),
        (run("echo", "a", "1", "extra"), "at most 2 arguments"),
        (PlanStep(action="run_allowlisted_script", target="web", params={"args": []}), "invalid params"),
    ],
    ids=["unlisted", "bad-argument", "too-many-arguments", "no-script"],
)
async def test_what_the_allowlist_does_not_accept_is_refused(
    adapter: RunAllowlistedScriptAdapter, step: PlanStep, error: str
) -> None:
    result = await adapter.execute(step, timeout_s=10)
    assert result.status == "refused" and error in (result.error or ""), result


async def test_a_script_that_overruns_times_out_and_is_killed(
    adapter: RunAllowlistedScriptAdapter, tmp_path: Path
) -> None:
    pid_file = tmp_path / "hang.pid"
    result = await adapter.execute(run("hang", str(pid_file)), timeout_s=1.0)
    assert result.status == "timed_out", result
    assert pid_file.exists(), "the script did not start within its timeout"
    assert not process_alive(int(pid_file.read_text()))


async def test_output_is_truncated_to_the_limit(adapter: RunAllowlistedScriptAdapter) -> None:
    result = await adapter.execute(run("chatty"), timeout_s=10)
    assert result.status == "succeeded"
    assert result.data["stdout"] == "y" * 1000 and result.data["stdout_bytes"] == 100_000


async def test_a_listed_script_missing_on_disk_fails(adapter: RunAllowlistedScriptAdapter) -> None:
    result = await adapter.execute(run("gone"), timeout_s=10)
    assert result.status == "failed" and "cannot start" in (result.error or "")


@pytest.mark.parametrize(("succeeds_at_run", "status", "runs"), [(3, "succeeded", 3), (4, "failed", 3)])
async def test_the_executor_retries_a_failing_script_within_bounds(
    adapter: RunAllowlistedScriptAdapter, tmp_path: Path, succeeds_at_run: int, status: str, runs: int
) -> None:
    executor = ActionExecutor(default_catalog(), {adapter.name: adapter}, backoff=BackoffPolicy(initial_s=0))
    counter = tmp_path / "runs"
    result = await executor.execute(run("flaky", str(counter), str(succeeds_at_run)), timeout_s=10, retries=2)
    assert result.status == status and result.attempts == runs
    assert counter.read_text() == str(runs)


@pytest.mark.parametrize(
    ("name", "params", "expected_in_stdout"),
    [
        ("uptime", {}, "load average"),
        ("disk_usage", {"path": "/"}, "Filesystem"),
        ("process_info", {"pid": "1"}, "PID"),
    ],
)
async def test_allowed_diagnostics_run(name: str, params: dict[str, str], expected_in_stdout: str) -> None:
    result = await DiagnosticAllowlist().run(name, params, timeout_s=10)
    assert result.status == "succeeded", result
    assert expected_in_stdout in result.data["stdout"]


async def test_an_unlisted_diagnostic_is_refused_without_running() -> None:
    result = await DiagnosticAllowlist().run("rm", {"path": "/"}, timeout_s=10)
    assert result.status == "refused" and "not in the allowlist" in (result.error or "")
    assert "argv" not in result.data
