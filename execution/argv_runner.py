"""Running one short-lived command as an argv list (never through a shell), under a timeout, output bounded.

The child runs in its own session, so on timeout the whole process group it started is killed, not only the
direct child. stdout and stderr are read as they come; at most `output_limit` bytes of each are kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from execution.results import ActionResult

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_LIMIT = 64 * 1024
_READ_CHUNK = 64 * 1024
_REAP_TIMEOUT_S = 5.0


async def run_argv(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
) -> ActionResult:
    """Run `argv` to completion. Exit 0 → succeeded; other exits → failed; no exit in time → timed_out.

    `data` holds `argv`, `exit_code`, `stdout`, `stderr` (decoded, at most `output_limit` bytes each) and
    `stdout_bytes` / `stderr_bytes` (how much the command really wrote). `env` None inherits this process's.
    """
    started = time.monotonic()
    data: dict[str, object] = {"argv": list(argv)}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("command could not start", extra={"argv0": argv[0], "error": str(exc)})
        return ActionResult.failed(f"cannot start {argv[0]}: {exc.strerror or exc}", since=started, data=data)
    assert process.stdout is not None and process.stderr is not None
    reading = asyncio.gather(
        _read_bounded(process.stdout, output_limit), _read_bounded(process.stderr, output_limit), process.wait()
    )
    try:
        (stdout, stdout_total), (stderr, stderr_total), exit_code = await asyncio.wait_for(reading, timeout_s)
    except TimeoutError:
        await _kill_group(process)
        log.warning("command timed out", extra={"argv0": argv[0], "pid": process.pid, "timeout_s": timeout_s})
        return ActionResult.timed_out(timeout_s, since=started, data=data)
    data.update(
        exit_code=exit_code,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
        stdout_bytes=stdout_total,
        stderr_bytes=stderr_total,
    )
    if exit_code != 0:
        return ActionResult.failed(f"{argv[0]} exited with {_exit_description(exit_code)}", since=started, data=data)
    return ActionResult.succeeded(data, since=started)


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    kept = bytearray()
    total = 0
    while chunk := await stream.read(_READ_CHUNK):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept), total


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the child leads its own session: pgid == pid
    except ProcessLookupError:
        pass
    try:
        await asyncio.wait_for(process.wait(), _REAP_TIMEOUT_S)
    except TimeoutError:
        log.error("killed command did not exit", extra={"pid": process.pid})


def _exit_description(exit_code: int) -> str:
    return f"signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
