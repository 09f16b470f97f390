"""Verification of a fix: a `VerifySpec`'s query, read through `MetricsQueries`, judged against its threshold.

The verdict is one of:

- `passed`: the query answered and its value satisfies the comparison.
- `failed`: the query answered and its value does not, or it answered with no data at all (a metric that is gone
  is no sign of a healthy service).
- `unknown`: we could not look (no metrics source configured, the server unreachable or slow, a bad query). That
  says nothing about the fix, so it must not be taken for a failed one (no rollback on `unknown`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bus.events import VerifySpec
from execution.prometheus_queries import MetricsQueries, QueryResult, compare

log = logging.getLogger(__name__)

VerdictStatus = Literal["passed", "failed", "unknown"]
NO_METRICS_SOURCE = "no metrics source configured"


class Verdict(BaseModel):
    """What a verify query said about a fix, with the value it saw (None when it saw none)."""

    model_config = ConfigDict(frozen=True)

    status: VerdictStatus
    observed: float | None = None
    reason: str


def judge(spec: VerifySpec, result: QueryResult) -> Verdict:
    """The verdict of one query result on `spec` (the largest sample counts when there are several)."""
    expected = f"{spec.comparator} {spec.threshold:g}"
    if result.status == "error":
        return Verdict(status="unknown", reason=f"could not read the metric: {result.error or 'unknown error'}")
    observed = result.value
    if result.status == "empty" or observed is None:
        return Verdict(status="failed", reason=f"no data: {spec.query!r} returned no samples (expected {expected})")
    if compare(observed, spec):
        return Verdict(status="passed", observed=observed, reason=f"observed {observed:g} {expected}")
    return Verdict(status="failed", observed=observed, reason=f"observed {observed:g}, expected {expected}")


async def verify(spec: VerifySpec, metrics: MetricsQueries | None, *, timeout_s: float) -> Verdict:
    """Run `spec`'s query through `metrics` (at most `timeout_s`) and judge it; `unknown` without a source."""
    if metrics is None:
        return Verdict(status="unknown", reason=NO_METRICS_SOURCE)
    try:
        async with asyncio.timeout(timeout_s):
            result = await metrics.instant(spec.query)
    except TimeoutError:
        log.warning("verify query timed out", extra={"query": spec.query, "timeout_s": timeout_s})
        return Verdict(status="unknown", reason=f"the metrics source did not answer within {timeout_s:g}s")
    verdict = judge(spec, result)
    log.info("verify query judged", extra={"query": spec.query, "status": verdict.status, "observed": verdict.observed})
    return verdict
