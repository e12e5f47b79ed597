"""A mutex whose waiters are served by priority, then in arrival order."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Reservation:
    """A claim that keeps a `PriorityLock` free for one holder of `priority` or better."""

    __slots__ = ("priority",)

    def __init__(self, priority: int) -> None:
        self.priority = priority


class PriorityLock:
    """Lower `priority` numbers go first; used so that ejects overtake polls on the bus.

    A reservation keeps the lock from every holder of a higher number, even while the lock is
    free, until a holder of the reserved priority or better takes the lock or the reservation
    is withdrawn. The bus uses it when an eject command arrives: a poll that started while the
    command was still being checked would otherwise hold the bus when the UNLOCK is ready.
    """

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._reservations: list[Reservation] = []
        self._holder: int | None = None
        self._release_watchers: list[asyncio.Future[None]] = []

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def holder(self) -> int | None:
        """Priority of the current holder; None while the lock is free."""
        return self._holder

    @property
    def reserved(self) -> int:
        """Number of reservations not yet used or withdrawn."""
        return len(self._reservations)

    def reserve(self, priority: int) -> Reservation:
        """Keep the lock for a holder of `priority` or better; see the class docstring."""
        reservation = Reservation(priority)
        self._reservations.append(reservation)
        return reservation

    def pending(self, reservation: Reservation) -> bool:
        """Return whether `reservation` still keeps the lock, neither used nor withdrawn."""
        return reservation in self._reservations

    def withdraw(self, reservation: Reservation) -> bool:
        """End a reservation; return False when a holder had already used it."""
        if reservation not in self._reservations:
            return False
        self._reservations.remove(reservation)
        self._grant_next()
        return True

    def _excluded(self, priority: int) -> bool:
        return any(priority > r.priority for r in self._reservations)

    def _take(self, priority: int) -> None:
        self._locked = True
        self._holder = priority
        if not self._reservations:
            return  # the usual case, on every bus exchange
        eligible = [r for r in self._reservations if priority <= r.priority]
        if eligible:
            # The narrowest reservation this holder satisfies is the one it was made for.
            self._reservations.remove(min(eligible, key=lambda r: r.priority))

    async def acquire(self, priority: int) -> None:
        if not self._locked and not self._waiters and not self._excluded(priority):
            self._take(priority)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), granted))
        # The lock may be free with every other waiter kept out by a reservation this one meets.
        self._grant_next()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # the lock was handed over just as the waiter was cancelled
            raise

    def watch_release(self, future: asyncio.Future[None]) -> None:
        """Complete `future` at the next release of the lock, if nothing completed it before."""
        self._release_watchers.append(future)

    def release(self) -> None:
        self._locked = False
        self._holder = None
        watchers, self._release_watchers = self._release_watchers, []
        for future in watchers:
            if not future.done():
                future.set_result(None)
        self._grant_next()

    def _grant_next(self) -> None:
        if self._locked:
            return
        while self._waiters:
            priority, _, granted = self._waiters[0]
            if granted.done():
                heapq.heappop(self._waiters)  # cancelled while waiting
                continue
            if self._excluded(priority):
                return  # the best waiter is kept out, and so is every other
            heapq.heappop(self._waiters)
            self._take(priority)
            granted.set_result(None)  # ownership passes on, the lock stays held
            return

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
