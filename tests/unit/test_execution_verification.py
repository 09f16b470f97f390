"""Verification verdicts: every comparator on both sides of its threshold, no data, and "we could not look"."""

from __future__ import annotations

import asyncio

import pytest

from bus.events import VerifySpec
from execution.prometheus_queries import QueryResult, Sample
from execution.verification import NO_METRICS_SOURCE, Verdict, judge, verify

QUERY = 'rate(http_errors_total{service="checkout"}[1m])'


def spec(comparator: str, threshold: float) -> VerifySpec:
    return VerifySpec(query=QUERY, comparator=comparator, threshold=threshold, window_s=30)


def answered(*values: float) -> QueryResult:
    samples = [Sample(labels={"instance": f"i{n}"}, value=value) for n, value in enumerate(values)]
    return QueryResult(status="ok" if samples else "empty", query=QUERY, samples=samples)


class AnsweringMetrics:
    def __init__(self, result: QueryResult) -> None:
        self.result = result
        self.queries: list[str] = []

    async def instant(self, query: str) -> QueryResult:
        self.queries.append(query)
        return self.result


class SilentMetrics:
    async def instant(self, query: str) -> QueryResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("comparator", "threshold", "observed", "status"),
    [
        ("<", 0.05, 0.01, "passed"),
        ("<", 0.05, 0.05, "failed"),
        ("<=", 0.05, 0.05, "passed"),
        ("<=", 0.05, 0.06, "failed"),
        (">", 1, 2, "passed"),
        (">", 1, 1, "failed"),
        (">=", 1, 1, "passed"),
        (">=", 1, 0.5, "failed"),
        ("==", 1, 1, "passed"),
        ("==", 1, 0, "failed"),
    ],
)
def test_a_value_is_judged_by_the_comparator(comparator: str, threshold: float, observed: float, status: str) -> None:
    verdict = judge(spec(comparator, threshold), answered(observed))
    assert verdict.status == status
    assert verdict.observed == observed


def test_the_largest_of_several_samples_is_judged() -> None:
    verdict = judge(spec("<", 0.05), answered(0.01, 0.2, 0.03))
    assert verdict == Verdict(status="failed", observed=0.2, reason="observed 0.2, expected < 0.05")


@pytest.mark.parametrize(
    ("result", "status", "reason"),
    [
        (answered(), "failed", "no data"),
        (QueryResult(status="error", query=QUERY, error="prometheus unreachable: ConnectError"), "unknown",
         "could not read the metric: prometheus unreachable"),
        (QueryResult(status="error", query=QUERY, error="bad_data: parse error"), "unknown", "bad_data"),
    ],
)  # fmt: skip
def test_no_data_fails_and_an_error_is_unknown(result: QueryResult, status: str, reason: str) -> None:
    verdict = judge(spec("<", 0.05), result)
    assert verdict.status == status and verdict.observed is None
    assert reason in verdict.reason


async def test_verify_asks_the_spec_query() -> None:
    metrics = AnsweringMetrics(answered(0.01))
    verdict = await verify(spec("<", 0.05), metrics, timeout_s=1)
    assert verdict.status == "passed" and verdict.observed == 0.01
    assert metrics.queries == [QUERY]


async def test_without_a_metrics_source_the_verdict_is_unknown() -> None:
    assert await verify(spec("<", 0.05), None, timeout_s=1) == Verdict(status="unknown", reason=NO_METRICS_SOURCE)


async def test_a_source_that_does_not_answer_in_time_is_unknown() -> None:
    verdict = await verify(spec("<", 0.05), SilentMetrics(), timeout_s=0.05)
    assert verdict.status == "unknown" and "did not answer within 0.05s" in verdict.reason
