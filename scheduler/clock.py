"""Time as the scheduler sees it: unix seconds from an injected clock, so time logic is testable without waiting."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time in unix seconds."""

    def now(self) -> float: ...


class WallClock:
    """The system's wall clock (what every process uses unless told otherwise)."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to: for tests, simulations and replays."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a manual clock only moves forward")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a manual clock only moves forward")
        self._now = when
