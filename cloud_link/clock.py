"""Time sources of the cloud link, injectable for tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cloud_link.config import ClockSync, CommandSettings


class Clock(Protocol):
    """Monotonic time for deadlines and intervals, wall time only for timestamps."""

    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Return seconds since the Unix epoch."""
        ...

    def wall_synchronised(self) -> bool:
        """Return whether the wall clock is known to follow a time server."""
        ...


class SystemClock:
    """The host clocks; synchronisation comes from the command settings."""

    def __init__(self, mode: ClockSync = ClockSync.UNSYNCHRONISED, marker: Path | None = None):
        self._mode = mode
        self._marker = marker

    @classmethod
    def from_settings(cls, settings: CommandSettings) -> SystemClock:
        return cls(settings.clock_sync, settings.clock_marker_file)

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wall_synchronised(self) -> bool:
        if self._mode is ClockSync.SYNCHRONISED:
            return True
        if self._mode is ClockSync.MARKER_FILE and self._marker is not None:
            return self._marker.exists()
        return False


class ManualClock:
    """A clock that moves only when a test calls `advance`."""

    def __init__(self, wall: float = 1_800_000_000.0, *, synchronised: bool = True) -> None:
        self._monotonic = 1000.0
        self._wall = wall
        self.synchronised = synchronised

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def wall_synchronised(self) -> bool:
        return self.synchronised

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall += seconds


def wall_datetime(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.wall(), tz=UTC)
