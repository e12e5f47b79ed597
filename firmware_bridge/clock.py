"""Time source of the bridge, injectable for tests.

Every timeout, interval and deadline uses `monotonic()`; `wall()` only stamps events that
leave the cabinet. Waiting goes through `sleep` so that a test clock can control it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, TypeVar

T = TypeVar("T")


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


SHORT_PAUSE_S = 0.001
"""Pauses shorter than this block the event loop instead of waiting for a timer.

The event loop's timers wake up in whole milliseconds (epoll), so a 0.3 ms pause would take
up to 1 ms and cost a wake-up.
"""


async def pause(clock: Clock, seconds: float) -> None:
    """Wait `seconds`; with the system clock a pause below SHORT_PAUSE_S blocks briefly."""
    if seconds <= 0:
        return
    if seconds < SHORT_PAUSE_S and type(clock) is SystemClock:
        time.sleep(seconds)  # noqa: ASYNC251 - shorter than one timer tick, see above
        return
    await clock.sleep(seconds)


async def wait_future(clock: Clock, future: asyncio.Future[T], seconds: float) -> T | None:
    """Wait for `future` at most `seconds` of `clock` time; return None on timeout.

    The future is left untouched on timeout, so the caller decides whether to cancel it.
    """
    if future.done():
        return future.result()
    if type(clock) is SystemClock:
        # The event loop's own timer: no task per wait, which the idle poll loop would
        # otherwise create several times a second. The shield keeps the future untouched.
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                return await asyncio.shield(future)
        except TimeoutError:
            if future.done():
                return future.result()
            return None
    sleeper: asyncio.Future[None] = asyncio.ensure_future(clock.sleep(seconds))
    waiting: set[asyncio.Future[object]] = {future, sleeper}  # type: ignore[arg-type]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Not awaited: awaiting it here could swallow a cancellation of the caller.
        sleeper.cancel()
    if future.done():
        return future.result()
    return None


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until `event` is set, at most `seconds` of `clock` time (None: no limit).

    Return whether the event was set.
    """
    if event.is_set():
        return True
    if seconds is None:
        await event.wait()
        return True
    if type(clock) is SystemClock:
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        except TimeoutError:
            return event.is_set()
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        return await wait_future(clock, waiter, seconds) is not None
    finally:
        waiter.cancel()
