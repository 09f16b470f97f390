"""Runs the real `opswarm` executable of this venv as a subprocess, as a user would."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

OPSWARM = Path(sys.executable).parent / "opswarm"


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


async def run_opswarm(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0) -> CliResult:
    """`opswarm ARGS` with this process's environment plus `env` (the CLI reads its settings from there)."""
    process = await asyncio.create_subprocess_exec(
        str(OPSWARM),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"opswarm {' '.join(args)} did not finish within {timeout_s}s") from None
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())
