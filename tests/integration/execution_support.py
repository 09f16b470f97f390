"""Helpers for the execution integration tests (this module holds no tests).

Process checks read /proc directly rather than going through `execution`, so a test does not trust the code it
checks. A zombie counts as gone: once killed, an orphan may wait for a reaper we do not control.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

# A child that runs until it is killed; `ready` in its output means its signal handling is in place.
RUN_UNTIL_KILLED = "import signal, sys\nprint('ready', flush=True)\nwhile True:\n    signal.pause()\n"
IGNORE_SIGTERM = (
    "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
    "while True:\n    signal.pause()\n"
)


def python_argv(code: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", code, *extra]


def process_alive(pid: int) -> bool:
    """Alive as the supervisor sees it (ProcessIdentity): not a zombie, and not exiting already (a process whose
    memory is released on exit has an empty cmdline a moment before it turns zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X") and bool(cmdline)


def process_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail the test if it does not within `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not true within {timeout_s}s")
        await asyncio.sleep(0.02)


def file_contains(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.exists() and text in path.read_text()


def write_script(path: Path, body: str) -> Path:
    """An executable Python script at `path` (run directly through its shebang line)."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def age_file(path: Path, age_s: float, *, now: float) -> None:
    os.utime(path, (now - age_s, now - age_s), follow_symlinks=False)
