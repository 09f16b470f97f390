"""Settings of one demo target service process, read once in `__main__` from `OPSWARM_TARGET_*` variables.

A "release" of the service is an environment: a bad deploy is starting it with `OPSWARM_TARGET_VERSION` set to
one of `OPSWARM_TARGET_FAULTY_VERSIONS` (a JSON list), and a rollback is starting it again with a good version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where clear_disk may delete by default (the execution agent's OPSWARM_CLEAR_DISK_ROOTS): data dirs go below it.
DEFAULT_DATA_ROOT = Path(".opswarm") / "scenarios"


class TargetSettings(BaseSettings):
    """Everything one target service process needs; nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix="OPSWARM_TARGET_", extra="ignore")

    # The `service` label of every metric, and the name scenarios and alerts use.
    name: str = Field(default="demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")
    host: str = "127.0.0.1"
    port: int = Field(default=18080, gt=0, lt=65536)
    version: str = Field(default="v1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    # Versions that answer every request of `/` with 500 (a bad deploy).
    faulty_versions: list[str] = ["v2-bad"]
    # The service's disk: disk_fill writes there, demo_disk_used_bytes sums it. Default: <DEFAULT_DATA_ROOT>/<name>.
    data_dir: Path | None = None
    # Reported as demo_disk_capacity_bytes, so that an alert can compare the used bytes with it.
    disk_capacity_bytes: int = Field(default=1 << 30, gt=0)
    # The simulated connection pool (pool_exhaustion fills it; POST /admin/pool/flush empties it).
    pool_name: str = "default"
    pool_size: int = Field(default=10, ge=1, le=10_000)
    # Requests per second the service makes to its own handler (no HTTP), so error ratios exist without a load
    # generator; 0 = off.
    self_traffic_rps: float = Field(default=0.0, ge=0, le=1000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _derive_data_dir(self) -> Self:
        directory = self.data_dir if self.data_dir is not None else DEFAULT_DATA_ROOT / self.name
        self.data_dir = directory.expanduser().resolve()
        return self

    def disk_dir(self) -> Path:
        assert self.data_dir is not None, "the validator derives it"
        return self.data_dir

    def serves_errors(self) -> bool:
        """Whether this version is a bad deploy."""
        return self.version in self.faulty_versions
