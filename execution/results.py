"""What every action adapter returns: a structured result, never an exception, for an expected failure.

The four statuses mean:

- `succeeded`: the action ran and did what it says.
- `failed`: the action was attempted and did not work (non-zero exit, HTTP error, process died); may be retried.
- `timed_out`: the action did not finish within its timeout; may be retried.
- `refused`: the action was not attempted because a rule forbids it or a precondition does not hold (not in the
  catalog, FORBIDDEN, invalid params, a path outside the allowlist, an unknown target); retrying cannot help.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ActionStatus = Literal["succeeded", "failed", "timed_out", "refused"]
RETRIABLE_STATUSES: frozenset[ActionStatus] = frozenset({"failed", "timed_out"})


def elapsed_ms(since: float) -> float:
    """Milliseconds since `since`, a `time.monotonic()` reading."""
    return max(0.0, (time.monotonic() - since) * 1000.0)


class ActionResult(BaseModel):
    """The outcome of one action attempt (or, from the executor, of all attempts of one step)."""

    model_config = ConfigDict(frozen=True)

    status: ActionStatus
    data: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    duration_ms: float = Field(default=0.0, ge=0)
    attempts: int = Field(default=1, ge=1)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @classmethod
    def succeeded(cls, data: dict[str, Any], *, since: float) -> ActionResult:
        return cls(status="succeeded", data=data, duration_ms=elapsed_ms(since))

    @classmethod
    def failed(cls, error: str, *, since: float, data: dict[str, Any] | None = None) -> ActionResult:
        return cls(status="failed", error=error, data=data or {}, duration_ms=elapsed_ms(since))

    @classmethod
    def timed_out(cls, timeout_s: float, *, since: float, data: dict[str, Any] | None = None) -> ActionResult:
        return cls(
            status="timed_out", error=f"no result within {timeout_s:g}s", data=data or {}, duration_ms=elapsed_ms(since)
        )

    @classmethod
    def refused(cls, error: str, *, since: float, data: dict[str, Any] | None = None) -> ActionResult:
        return cls(status="refused", error=error, data=data or {}, duration_ms=elapsed_ms(since))


def describe_validation_error(exc: ValidationError) -> str:
    """`replicas: Input should be greater than or equal to 1; extra: Extra inputs are not permitted`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "params"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
