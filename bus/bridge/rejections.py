"""Why a request was not taken: an HTTP status, a short reason (the metric label) and a readable detail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field


@dataclass(eq=False)
class Rejection(Exception):
    """Raised anywhere along a request; the endpoint answers with it. Never carries secrets or whole bodies."""

    status: int
    # unauthorized, unsupported_media_type, too_large, body_timeout, bad_request, not_json, invalid,
    # kafka_unavailable, publish_timeout, overloaded
    reason: str
    detail: str
    problems: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.detail}"

    def body(self) -> dict[str, Any]:
        return Problem(error=self.reason, detail=self.detail, problems=self.problems).model_dump()


def invalid(what: str, problems: list[str]) -> Rejection:
    """A 422 for `what` (e.g. "Alertmanager webhook"), its detail naming the first problem."""
    more = f" (and {len(problems) - 1} more, see problems)" if len(problems) > 1 else ""
    return Rejection(422, "invalid", f"invalid {what}: {problems[0]}{more}", problems=problems)


class Problem(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: str = Field(description="short reason, also the `reason` label of opswarm_bridge_requests_rejected_total")
    detail: str = Field(description="what was wrong, for a human")
    problems: list[str] = Field(default_factory=list, description="one line per invalid field (422 only)")
