"""Clocks for the simulation: a manual one for tests, a scaled monotonic one for live runs."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Return simulation time in seconds; it never goes backwards."""
        ...


class ManualClock:
    """A clock that moves only through `advance` and `set`, so tests control time exactly."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cannot move the clock back by {seconds} s")
        self._now += seconds

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError(f"cannot move the clock back from {self._now} to {when}")
        self._now = when


class MonotonicClock:
    """time.monotonic() scaled by `speed`, starting at zero; speed 10 runs ten times faster."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, not {speed}")
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.speed
