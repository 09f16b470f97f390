"""Log excerpts as evidence: the last error-looking lines of a service's log files.

`LogSource` is what diagnosis depends on; `FileLogSource` reads the tail of files under allowlisted roots. A
service's files are, in each root: files directly inside whose name is the service's or starts with it and
".", "-" or "_" (`checkout.log`, `checkout-2026-01-01.log`), and the files directly inside a directory named
like the service. An alert may name its log file instead (a path inside a root, absolute or relative to one).
Every path is resolved (symlinks followed) and must stay inside its root; only regular files are read, only
their last `tail_bytes`. Answers are structured (`ok`, `empty`, `unconfigured`, `error`), never exceptions.
`FileLogSource.tail` gives the last lines of one such file, matching or not (for log summaries).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)
_Read = TypeVar("_Read")

DEFAULT_ERROR_PATTERN = re.compile(
    r"\b(error|errors|exception|fatal|panic|traceback|critical|failed|failure|refused|timeout|timed out|oom)\b",
    re.IGNORECASE,
)
_USABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_SEPARATORS = (".", "-", "_")


class LogExcerpt(BaseModel):
    """The matching lines of one file's tail, oldest first."""

    path: str
    lines: list[str] = Field(default_factory=list)
    # How many lines of the tail matched (lines holds the last of them).
    matched: int = 0
    scanned_bytes: int = 0


class LogExcerpts(BaseModel):
    """What the logs of a service say, or why they could not be read."""

    status: Literal["ok", "empty", "unconfigured", "error"]
    service: str
    excerpts: list[LogExcerpt] = Field(default_factory=list)
    # Every file looked at, matching lines or not.
    files: list[str] = Field(default_factory=list)
    error: str | None = None


class LogTail(BaseModel):
    """The last lines of one log file of a service (its newest, or the one named), oldest first."""

    status: Literal["ok", "empty", "unconfigured", "error"]
    service: str
    path: str | None = None
    lines: list[str] = Field(default_factory=list)
    scanned_bytes: int = 0
    error: str | None = None


class LogSource(Protocol):
    async def excerpts(self, service: str, *, log_file: str | None = None, max_lines: int = 20) -> LogExcerpts: ...


class FileLogSource:
    """Reads the tails of log files under allowlisted root directories."""

    def __init__(
        self,
        roots: Sequence[str | Path],
        *,
        pattern: re.Pattern[str] = DEFAULT_ERROR_PATTERN,
        tail_bytes: int = 256 * 1024,
        max_files: int = 5,
        max_line_chars: int = 500,
        timeout_s: float = 2.0,
    ) -> None:
        self._roots = [Path(root).expanduser().resolve() for root in roots]
        self._pattern = pattern
        self._tail_bytes = tail_bytes
        self._max_files = max_files
        self._max_line_chars = max_line_chars
        self._timeout_s = timeout_s

    async def excerpts(self, service: str, *, log_file: str | None = None, max_lines: int = 20) -> LogExcerpts:
        def failed(status: str, error: str) -> LogExcerpts:
            return LogExcerpts(status=status, service=service, error=error)  # type: ignore[arg-type]

        read = partial(self._read, service, log_file, max(1, max_lines))
        return await self._bounded("excerpts", service, read, failed)

    async def tail(self, service: str, *, log_file: str | None = None, max_lines: int = 2000) -> LogTail:
        """The last `max_lines` lines (matching or not) of the named file or of the service's newest file.

        Same roots, resolution and byte bound as `excerpts`; `empty` when the service has no file or it has no
        lines, `error` when the named file is refused or reading fails.
        """

        def failed(status: str, error: str) -> LogTail:
            return LogTail(status=status, service=service, error=error)  # type: ignore[arg-type]

        read = partial(self._read_tail, service, log_file, max(1, max_lines))
        return await self._bounded("tail", service, read, failed)

    async def _bounded(
        self, what: str, service: str, read: Callable[[], _Read], failed: Callable[[str, str], _Read]
    ) -> _Read:
        """`read()` in a worker thread under the timeout; no roots, a timeout or an OSError as `failed(status, why)`."""
        if not self._roots:
            return failed("unconfigured", "no log roots configured")
        try:
            async with asyncio.timeout(self._timeout_s):
                return await asyncio.to_thread(read)
        except TimeoutError:
            log.warning("log read timed out", extra={"what": what, "service": service, "timeout_s": self._timeout_s})
            return failed("error", f"logs not read within {self._timeout_s:g}s")
        except OSError as exc:
            log.warning("log read failed", extra={"what": what, "service": service, "error": repr(exc)})
            return failed("error", f"logs not readable: {exc}")

    def _read_tail(self, service: str, log_file: str | None, max_lines: int) -> LogTail:
        files = self._files(service, log_file)
        if isinstance(files, str):
            return LogTail(status="error", service=service, error=files)
        if not files:
            return LogTail(status="empty", service=service)
        path = files[0]  # the named file, or the service's newest
        lines, scanned = self._tail_lines(path)
        lines = [line[: self._max_line_chars] for line in lines[-max_lines:]]
        return LogTail(
            status="ok" if lines else "empty", service=service, path=str(path), lines=lines, scanned_bytes=scanned
        )

    def _files(self, service: str, log_file: str | None) -> list[Path] | str:
        """The named file, or the service's files newest first; a string saying why not when refused."""
        if log_file:
            path = self._named_file(log_file)
            if path is None:
                return f"log file {log_file!r} is not a regular file inside the allowlisted log roots"
            return [path]
        if not _USABLE_NAME.fullmatch(service) or ".." in service:
            return f"service {service!r} is not usable as a file name"
        return self._service_files(service)

    def _read(self, service: str, log_file: str | None, max_lines: int) -> LogExcerpts:
        files = self._files(service, log_file)
        if isinstance(files, str):
            return LogExcerpts(status="error", service=service, error=files)
        excerpts = [excerpt for excerpt in (self._tail(path, max_lines) for path in files) if excerpt.matched]
        return LogExcerpts(
            status="ok" if excerpts else "empty", service=service, excerpts=excerpts, files=[str(p) for p in files]
        )

    def _named_file(self, log_file: str) -> Path | None:
        """The file an alert names, if it resolves to a regular file inside a root."""
        if "\0" in log_file:
            return None
        named = Path(log_file)
        candidates = [named] if named.is_absolute() else [root / named for root in self._roots]
        for candidate in candidates:
            path = self._inside_roots(candidate)
            if path is not None:
                return path
        return None

    def _service_files(self, service: str) -> list[Path]:
        found: dict[Path, float] = {}
        for root in self._roots:
            for directory, whole_dir in ((root, False), (root / service, True)):
                try:
                    entries = list(os.scandir(directory))
                except OSError:  # missing, not a directory, not readable: nothing there
                    continue
                for entry in entries:
                    if not (whole_dir or _names_service(entry.name, service)):
                        continue
                    path = self._inside_roots(Path(entry.path))
                    if path is not None:
                        found[path] = path.stat().st_mtime
        newest_first = sorted(found, key=lambda p: found[p], reverse=True)
        return newest_first[: self._max_files]

    def _inside_roots(self, candidate: Path) -> Path | None:
        try:
            path = candidate.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        if not path.is_file() or not any(path.is_relative_to(root) for root in self._roots):
            return None
        return path

    def _tail(self, path: Path, max_lines: int) -> LogExcerpt:
        try:
            lines, scanned = self._tail_lines(path)
        except OSError as exc:
            log.warning("log file not readable", extra={"path": str(path), "error": repr(exc)})
            return LogExcerpt(path=str(path))
        matching = [line[: self._max_line_chars] for line in lines if self._pattern.search(line)]
        return LogExcerpt(path=str(path), lines=matching[-max_lines:], matched=len(matching), scanned_bytes=scanned)

    def _tail_lines(self, path: Path) -> tuple[list[str], int]:
        """The whole lines of the file's last `tail_bytes`, and how many bytes were read; raises OSError."""
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - self._tail_bytes)
            handle.seek(start)
            raw = handle.read(self._tail_bytes)
        lines = raw.decode("utf-8", errors="replace").splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # the first line was cut by the seek
        return lines, len(raw)


def _names_service(file_name: str, service: str) -> bool:
    if file_name == service:
        return True
    return file_name.startswith(service) and file_name[len(service) : len(service) + 1] in _NAME_SEPARATORS
