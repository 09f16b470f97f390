"""The demo target service's fault state: error_rate spreads failures evenly, the pool leaks and flushes, and a
disk fill stays within its bound."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deploy.target_service.faults import ConnectionPool, DiskFillParams, FaultState


@pytest.mark.parametrize(
    ("rate", "requests", "failures"),
    [(0.0, 10, 0), (0.1, 10, 1), (0.25, 8, 2), (0.5, 10, 5), (1 / 3, 9, 3), (0.9, 10, 9), (1.0, 7, 7)],
)
def test_error_rate_fails_exactly_that_share(rate: float, requests: int, failures: int) -> None:
    faults = FaultState(pool=ConnectionPool("default", 4))
    faults.set_error_rate(rate)
    assert sum(faults.next_request_fails() for _ in range(requests)) == failures


def test_the_pool_refuses_once_exhausted_and_recovers_on_flush() -> None:
    pool = ConnectionPool("default", 2)
    assert pool.acquire() and pool.acquire()
    assert not pool.acquire() and pool.in_use == 2
    pool.release()
    pool.release()
    pool.leak_all()
    assert (pool.in_use, pool.exhausted, pool.acquire()) == (2, True, False)
    assert pool.flush() == 2
    assert pool.acquire() and pool.in_use == 1


@pytest.mark.parametrize(
    "params",
    [
        {"files": 0},
        {"size_bytes": 0},
        {"age_s": -1},
        {"files": 10_000, "size_bytes": 256 << 20},  # far more than the bound on one fill
        {"files": 1, "colour": "red"},
    ],
)
def test_disk_fill_params_refused(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DiskFillParams.model_validate(params)
