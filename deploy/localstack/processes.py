"""Detached processes of the local stack: launch, pid files, recognition and shutdown.

A component's pid file `STATE/run/<name>.pid` holds its pid; `STATE/run/<name>.launch.json` holds the argv we
launched it with, the ports it was told to use and a digest of the environment we set for it (a digest: values may
be secrets). A process counts as ours only while /proc/PID/cmdline equals
that argv, so a pid the kernel has since given to someone else is never signalled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.localstack import procfs

log = logging.getLogger(__name__)

_POLL_S = 0.1


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says we launched."""

    pid: int
    argv: list[str]
    ports: list[int]
    env_digest: str = ""

    def is_running(self) -> bool:
        return procfs.cmdline(self.pid) == self.argv

    def ended(self) -> str | None:
        """None while running, else a word on how it ended (we are not its parent: no exit code)."""
        return None if self.is_running() else "process gone"


class RunDir:
    """The pid files of one state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pid_file(self, name: str) -> Path:
        return self.path / f"{name}.pid"

    def launch_file(self, name: str) -> Path:
        return self.path / f"{name}.launch.json"

    def read(self, name: str) -> ProcessRecord | None:
        try:
            pid = int(self.pid_file(name).read_text().strip())
            launch = json.loads(self.launch_file(name).read_text())
            argv, ports = [str(arg) for arg in launch["argv"]], [int(p) for p in launch["ports"]]
            return ProcessRecord(pid, argv, ports, str(launch.get("env_digest", "")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def has_files(self, name: str) -> bool:
        return self.pid_file(name).exists() or self.launch_file(name).exists()

    def write(self, name: str, record: ProcessRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        launch = {"argv": record.argv, "ports": record.ports, "env_digest": record.env_digest}
        self.launch_file(name).write_text(json.dumps(launch))
        self.pid_file(name).write_text(f"{record.pid}\n")

    def remove(self, name: str) -> None:
        self.pid_file(name).unlink(missing_ok=True)
        self.launch_file(name).unlink(missing_ok=True)


def this_python() -> str:
    """This interpreter under one stable name: a venv's `bin/python3` (pytest's shebang) and `bin/python` (the
    CLI's) are the same program, but a component launched by one must be recognised by the other (argv match)."""
    plain = Path(sys.executable).with_name("python")
    return str(plain) if plain.exists() else sys.executable


def env_digest(env: Mapping[str, str] | None) -> str:
    """A stable digest of the variables set for a process ("" for none), to tell whether they changed since."""
    if not env:
        return ""
    return hashlib.sha256(json.dumps(sorted(env.items())).encode()).hexdigest()


def spawn(
    argv: list[str], *, log_file: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (it outlives us), stdout and stderr appended to `log_file`; `env` is set on
    top of our own environment."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
        )
    log.info("process started", extra={"argv0": argv[0], "pid": process.pid, "log_file": str(log_file)})
    return process


async def terminate(record: ProcessRecord, timeout_s: float) -> str:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL. Returns "stopped", "killed" or "not running"."""
    if not record.is_running():
        return "not running"
    _signal(record.pid, signal.SIGTERM)
    if await _wait_gone(record, timeout_s):
        return "stopped"
    log.warning("process ignored SIGTERM, killing", extra={"pid": record.pid, "timeout_s": timeout_s})
    _signal(record.pid, signal.SIGKILL)
    if await _wait_gone(record, 5.0):
        return "killed"
    raise RuntimeError(f"pid {record.pid} survived SIGKILL")


def port_in_use(host: str, port: int) -> bool:
    """True when binding `host:port` fails, i.e. a server would not be able to listen there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


async def _wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while record.is_running():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True
