"""Admission control: at most `limit` alerts being published at once; past it, 503 at once, never a wait.

An alert is in flight from the moment its request is admitted to publishing until Kafka acknowledged it (or the
request gave up: 503). A request is admitted when its alerts fit under the limit, or when nothing is in flight
(one request larger than the limit still goes through alone, instead of never). Otherwise it is refused with
503 "overloaded" and Retry-After: the sender retries later (Alertmanager does), and what the bridge took stays
what Kafka acknowledged. `refuse_if_full` refuses before the body is parsed, when nothing could fit anyway: once
full, the bridge spends no parsing on the requests it refuses.

Everything runs on the event loop's thread, between awaits: plain integers, no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bus.bridge.rejections import Rejection

# Alertmanager ignores it, other senders may not: how soon a retry after a 503 makes sense.
RETRY_AFTER_S = "1"


def unavailable(reason: str, detail: str) -> Rejection:
    """A 503 the sender should retry (same body, same event ids), with Retry-After."""
    return Rejection(503, reason, detail, headers={"Retry-After": RETRY_AFTER_S})


class Admission:
    """Counts the alerts in flight against `limit`."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self.in_flight = 0

    def refuse_if_full(self) -> None:
        """Rejection(503, overloaded) when no alert at all fits now."""
        if self.in_flight >= self.limit:
            raise self._overloaded()

    @contextmanager
    def admit(self, alerts: int) -> Iterator[None]:
        """Count `alerts` in flight while the block runs; Rejection(503, overloaded) when they do not fit."""
        if self.in_flight and self.in_flight + alerts > self.limit:
            raise self._overloaded(f"; {alerts} more do not fit")
        self.in_flight += alerts
        try:
            yield
        finally:
            self.in_flight -= alerts

    def _overloaded(self, more: str = "") -> Rejection:
        detail = f"the bridge is publishing {self.in_flight} alerts, at most {self.limit} at once{more}: retry later"
        return unavailable("overloaded", detail)
