"""The faults a target service can be told to have, and the state they leave it in.

Standing faults change how `/` answers until cleared: `latency` (extra milliseconds), `error_rate` (a fraction of
answers are 500s, spread evenly: rate 0.25 fails exactly every 4th request) and `pool_exhaustion` (every pooled
connection is leaked, so `/` answers 503 until the pool is flushed). `disk_fill` writes files into the data dir,
some of them aged with os.utime so that clear_disk's min age lets it delete them, plus a few fresh ones it must
keep. `data_corruption` makes the data store report a table's checksums
wrong (demo_data_corruption 1). `crash` is not standing: the process exits with code 1 once it has answered.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

FaultKind = Literal["crash", "latency", "error_rate", "disk_fill", "pool_exhaustion", "data_corruption"]
# What DELETE /faults clears: every kind but crash.
CLEARABLE_KINDS: tuple[FaultKind, ...] = ("latency", "error_rate", "disk_fill", "pool_exhaustion", "data_corruption")

FILL_PREFIX = "fill-"
_MAX_FILL_BYTES = 4 << 30
_WRITE_CHUNK = 1 << 20


class FaultParams(BaseModel):
    """Base of every fault's params: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CrashParams(FaultParams):
    pass


class LatencyParams(FaultParams):
    ms: int = Field(ge=1, le=60_000)


class ErrorRateParams(FaultParams):
    rate: float = Field(gt=0, le=1)


class DiskFillParams(FaultParams):
    files: int = Field(default=10, ge=1, le=10_000)
    size_bytes: int = Field(default=1 << 20, ge=1, le=256 << 20)
    # How old the files look (their mtime this far in the past); 0 = written now.
    age_s: float = Field(default=0.0, ge=0)
    # Extra files of the same size with a current mtime: what a cleanup by age must leave alone.
    fresh_files: int = Field(default=2, ge=0, le=10_000)

    @model_validator(mode="after")
    def _bounded(self) -> DiskFillParams:
        if (self.files + self.fresh_files) * self.size_bytes > _MAX_FILL_BYTES:
            raise ValueError(f"at most {_MAX_FILL_BYTES} bytes in one fill")
        return self


class PoolExhaustionParams(FaultParams):
    pass


class DataCorruptionParams(FaultParams):
    # The table whose checksums stop matching (reported in demo_data_corruption's `table` label).
    table: str = Field(default="orders", pattern=r"^[a-z][a-z0-9_]{0,40}$")


PARAMS_MODELS: dict[FaultKind, type[FaultParams]] = {
    "crash": CrashParams,
    "latency": LatencyParams,
    "error_rate": ErrorRateParams,
    "disk_fill": DiskFillParams,
    "pool_exhaustion": PoolExhaustionParams,
    "data_corruption": DataCorruptionParams,
}


class ConnectionPool:
    """A simulated connection pool: requests hold a connection while they work; leaked ones stay taken."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.active = 0
        self.leaked = 0

    @property
    def in_use(self) -> int:
        return min(self.size, self.active + self.leaked)

    @property
    def exhausted(self) -> bool:
        return self.in_use >= self.size

    def acquire(self) -> bool:
        """Take a connection; False when none is free."""
        if self.exhausted:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def leak_all(self) -> None:
        self.leaked = self.size

    def flush(self) -> int:
        """Drop the leaked connections (re-open the pool); returns how many there were."""
        flushed, self.leaked = self.leaked, 0
        return flushed


@dataclass
class FaultState:
    """The standing faults of one process, and the error spreading of `error_rate`."""

    pool: ConnectionPool
    latency_ms: int = 0
    error_rate: float = 0.0
    # The table the data store reports corrupt (its checksums no longer match), if any.
    corrupted_table: str | None = None
    _error_credit: float = 0.0

    def set_error_rate(self, rate: float) -> None:
        self.error_rate = rate
        self._error_credit = 0.0

    def next_request_fails(self) -> bool:
        """Whether this request is one of the `error_rate` share that fails (evenly spread, not random)."""
        self._error_credit += self.error_rate
        if self._error_credit >= 1.0 - 1e-9:
            self._error_credit -= 1.0
            return True
        return False

    def describe(self) -> dict[str, object]:
        pool = self.pool
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "corrupted_table": self.corrupted_table,
            "pool": {"name": pool.name, "size": pool.size, "in_use": pool.in_use, "leaked": pool.leaked},
        }


@dataclass(frozen=True)
class DiskUsage:
    files: int
    bytes: int
    fill_files: int


def fill_disk(directory: Path, params: DiskFillParams, *, now: float | None = None) -> list[Path]:
    """Write the fill files (blocking: run it in a thread); returns their paths, aged ones first."""
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    batch = f"{FILL_PREFIX}{time.time_ns():x}"
    written = []
    for index in range(params.files + params.fresh_files):
        aged = index < params.files
        path = directory / f"{batch}-{index:05d}-{'old' if aged else 'fresh'}.bin"
        _write_zeros(path, params.size_bytes)
        if aged and params.age_s > 0:
            os.utime(path, (now - params.age_s, now - params.age_s))
        written.append(path)
    log.info("disk filled", extra={"directory": str(directory), **params.model_dump()})
    return written


def remove_fill_files(directory: Path) -> int:
    """Delete every fill file in `directory` (blocking); returns how many."""
    removed = 0
    for path in _fill_files(directory):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def disk_usage(directory: Path) -> DiskUsage:
    """Regular files below `directory` (recursively, links not followed): count and total size."""
    files = size = fill = 0
    for root, _dirs, names in os.walk(directory):
        for name in names:
            try:
                info = os.stat(os.path.join(root, name), follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                files += 1
                size += info.st_size
                fill += name.startswith(FILL_PREFIX)
    return DiskUsage(files=files, bytes=size, fill_files=fill)


def _fill_files(directory: Path) -> list[Path]:
    try:
        return [path for path in directory.iterdir() if path.name.startswith(FILL_PREFIX) and path.is_file()]
    except FileNotFoundError:
        return []


def _write_zeros(path: Path, size: int) -> None:
    """A file of `size` real bytes (not sparse: the disk really fills)."""
    chunk = b"\0" * min(size, _WRITE_CHUNK)
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            out.write(chunk[:remaining])
            remaining -= len(chunk)
