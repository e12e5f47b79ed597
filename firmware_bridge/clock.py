"""Time source of the bridge, injectable for tests.

Every timeout, interval and deadline uses `monotonic()`; `wall()` only stamps events that
leave the cabinet. Waiting goes through `sleep` so that a test clock can control it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Return seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The host clocks and the event loop's sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
