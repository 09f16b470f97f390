"""The supervisor's restart backoff: doubling delays up to a cap, starting over after a healthy run."""

from __future__ import annotations

import pytest

from scheduler.agent_supervisor_state import BackoffPolicy

POLICY = BackoffPolicy(initial_s=1.0, max_s=30.0, reset_after_s=60.0)


@pytest.mark.parametrize(
    ("streak", "delay_s"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0), (100, 30.0), (10_000, 30.0)],
)
def test_delay_doubles_up_to_the_cap(streak: int, delay_s: float) -> None:
    assert POLICY.delay(streak) == delay_s


@pytest.mark.parametrize("streak", [0, -1])
def test_a_streak_counts_from_one(streak: int) -> None:
    with pytest.raises(ValueError):
        POLICY.delay(streak)


@pytest.mark.parametrize(
    ("streak", "uptime_s", "after"),
    [
        (0, 0.1, 1),  # the first exit
        (1, 0.1, 2),  # crashing again at once
        (5, 59.9, 6),  # not up long enough to count as healthy
        (5, 60.0, 1),  # a healthy run starts the schedule over
        (9, 3600.0, 1),
    ],
)
def test_streak_grows_until_a_healthy_run(streak: int, uptime_s: float, after: int) -> None:
    assert POLICY.streak_after_exit(streak, uptime_s) == after


def test_a_crash_loop_then_a_healthy_run_gives_this_schedule() -> None:
    streak, delays = 0, []
    for uptime_s in (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 120.0, 0.5):
        streak = POLICY.streak_after_exit(streak, uptime_s)
        delays.append(POLICY.delay(streak))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 1.0, 2.0]
