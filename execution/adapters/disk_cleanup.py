"""The `clear_disk` action: delete old regular files directly inside an allowlisted directory.

The requested path is resolved (symlinks followed) and must be an allowlisted root or a directory inside one; a
path outside, a symlink that leads outside, or a root that resolves to `/` is refused. Only the directory's own
entries are considered (no recursion), and of those only regular files (not symlinks, directories, sockets...)
whose mtime is at least `min_age_s` old. The directory is opened once without following symlinks, and every stat
and unlink is relative to that descriptor, so swapping the directory for a symlink meanwhile changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bus.events import PlanStep
from execution.adapters import ParamsCheckingAdapter
from execution.catalog import ClearDiskParams
from execution.results import ActionResult

log = logging.getLogger(__name__)

_ROOT = Path("/")


class DiskCleanupConfig(BaseModel):
    """Where clear_disk may delete files."""

    model_config = ConfigDict(frozen=True)

    allowed_roots: list[Path] = Field(min_length=1)
    # How many deleted file names the result lists (the counts are always complete).
    listed_files_limit: int = Field(default=100, ge=0)

    @field_validator("allowed_roots")
    @classmethod
    def _absolute_and_not_root(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"allowed root {root} is not absolute")
            if Path(os.path.normpath(root)) == _ROOT:
                raise ValueError("/ cannot be an allowed root")
        return roots


@dataclass
class _Sweep:
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    skipped_recent: int = 0
    skipped_not_regular: int = 0
    errors: list[str] = field(default_factory=list)
    out_of_time: bool = False


class ClearDiskAdapter(ParamsCheckingAdapter[ClearDiskParams]):
    name = "clear_disk"
    params_model = ClearDiskParams

    def __init__(self, config: DiskCleanupConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock  # wall-clock seconds, compared with file mtimes

    async def run(self, step: PlanStep, params: ClearDiskParams, *, timeout_s: float, started: float) -> ActionResult:
        directory, refusal = self._locate(Path(params.path))
        if directory is None:
            log.warning("clear_disk refused", extra={"path": params.path, "reason": refusal})
            return ActionResult.refused(refusal, since=started, data={"path": params.path})
        deadline = started + timeout_s
        sweep = await asyncio.to_thread(self._sweep, directory, params.min_age_s, params.dry_run, deadline)
        data = {
            "path": str(directory),
            "dry_run": params.dry_run,
            "files_deleted": len(sweep.deleted),
            "bytes_freed": sweep.bytes_freed,
            "files": sweep.deleted[: self._config.listed_files_limit],
            "skipped_recent": sweep.skipped_recent,
            "skipped_not_regular": sweep.skipped_not_regular,
            "errors": sweep.errors[:20],
        }
        log.info("clear_disk swept", extra={k: v for k, v in data.items() if k not in ("files", "errors")})
        if sweep.out_of_time:
            return ActionResult.timed_out(timeout_s, since=started, data=data)
        if sweep.errors:
            return ActionResult.failed(f"{len(sweep.errors)} files could not be deleted", since=started, data=data)
        return ActionResult.succeeded(data, since=started)

    def _locate(self, requested: Path) -> tuple[Path | None, str]:
        """(the resolved directory, "") when allowed, else (None, why not)."""
        try:
            resolved = requested.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            return None, f"{requested} does not exist"
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            return None, f"{requested} cannot be resolved: {exc}"
        lexical = Path(os.path.normpath(requested))
        lexically_inside = False
        for root in self._config.allowed_roots:
            real_root = root.resolve()
            if real_root == _ROOT:
                return None, f"allowed root {root} resolves to /: refused"
            if resolved == real_root or real_root in resolved.parents:
                if not resolved.is_dir():
                    return None, f"{requested} is not a directory"
                return resolved, ""
            lexically_inside = lexically_inside or lexical == root or root in lexical.parents
        if lexically_inside:
            return None, f"{requested} resolves to {resolved}, outside the allowed roots (a symlink escapes them)"
        return None, f"{requested} is outside the allowed roots"

    def _sweep(self, directory: Path, min_age_s: float, dry_run: bool, deadline: float) -> _Sweep:
        sweep = _Sweep()
        now = self._clock()
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            sweep.errors.append(f"{directory}: {exc.strerror or exc}")
            return sweep
        try:
            if Path(os.readlink(f"/proc/self/fd/{dir_fd}")) != directory:  # a parent was swapped meanwhile
                sweep.errors.append(f"{directory} changed while it was being opened")
                return sweep
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    if time.monotonic() > deadline:
                        sweep.out_of_time = True
                        break
                    self._consider(entry.name, dir_fd, now - min_age_s, dry_run, sweep)
        finally:
            os.close(dir_fd)
        return sweep

    @staticmethod
    def _consider(name: str, dir_fd: int, cutoff: float, dry_run: bool, sweep: _Sweep) -> None:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode):
            sweep.skipped_not_regular += 1
            return
        if info.st_mtime > cutoff:
            sweep.skipped_recent += 1
            return
        if not dry_run:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                sweep.errors.append(f"{name}: {exc.strerror or exc}")
                return
        sweep.deleted.append(name)
        sweep.bytes_freed += info.st_size
