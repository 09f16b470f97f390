"""Reading metrics through the Prometheus HTTP API, for diagnosis's evidence and for verification.

`MetricsQueries` is what the agents depend on; `PrometheusQueries` is the real client (httpx, one timeout per
call). A query answers a structured `QueryResult` — never raises for an unreachable server, a bad query or an
empty answer — because verification must tell "the fix failed" apart from "we could not look".
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, Field

from bus.events import VerifySpec

log = logging.getLogger(__name__)


class Sample(BaseModel):
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class QueryResult(BaseModel):
    """The samples of an instant query, or why there are none."""

    status: Literal["ok", "empty", "error"]
    query: str
    samples: list[Sample] = Field(default_factory=list)
    error: str | None = None

    @property
    def value(self) -> float | None:
        """The single value a verify query should produce (the largest, if it produced several)."""
        return max((s.value for s in self.samples), default=None)


class MetricsQueries(Protocol):
    async def instant(self, query: str) -> QueryResult: ...


class PrometheusQueries:
    """Instant queries against a Prometheus server's HTTP API (`/api/v1/query`)."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def instant(self, query: str) -> QueryResult:
        try:
            response = await self._client.get(
                f"{self._base_url}/api/v1/query", params={"query": query}, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            log.warning("prometheus unreachable", extra={"query": query, "error": str(exc)})
            return QueryResult(status="error", query=query, error=f"prometheus unreachable: {exc!r}")
        try:
            body = response.json()
        except ValueError:
            return QueryResult(status="error", query=query, error=f"HTTP {response.status_code}, not JSON")
        if response.status_code != 200 or body.get("status") != "success":
            return QueryResult(status="error", query=query, error=str(body.get("error") or response.status_code))
        return _result(query, body.get("data") or {})


def _result(query: str, data: dict[str, Any]) -> QueryResult:
    kind, raw = data.get("resultType"), data.get("result")
    samples: list[Sample] = []
    if kind == "vector":
        for row in raw or []:
            value = _number(row.get("value"))
            if value is not None:
                samples.append(Sample(labels=row.get("metric") or {}, value=value))
    elif kind == "scalar":
        value = _number(raw)
        if value is not None:
            samples.append(Sample(value=value))
    else:
        return QueryResult(status="error", query=query, error=f"unsupported result type {kind!r}")
    return QueryResult(status="ok" if samples else "empty", query=query, samples=samples)


def _number(pair: Any) -> float | None:
    try:
        value = float(pair[1])
    except (TypeError, ValueError, IndexError):
        return None
    return None if math.isnan(value) else value


def compare(observed: float, spec: VerifySpec) -> bool:
    """Whether `observed` satisfies the verify spec's comparison with its threshold."""
    match spec.comparator:
        case "<":
            return observed < spec.threshold
        case "<=":
            return observed <= spec.threshold
        case ">":
            return observed > spec.threshold
        case ">=":
            return observed >= spec.threshold
        case "==":
            return observed == spec.threshold
