"""Recent daemon events for the CLI: a bounded ring plus live followers."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from pydantic import JsonValue

from gateway.api import EventRecord

RING_SIZE = 1000
FOLLOWER_QUEUE = 256


class EventFeed:
    """Keeps the last `RING_SIZE` events and fans new ones out to followers.

    A follower that falls `FOLLOWER_QUEUE` events behind loses the oldest of them rather than
    slowing the daemon down.
    """

    def __init__(self) -> None:
        self._ring: deque[EventRecord] = deque(maxlen=RING_SIZE)
        self._followers: set[asyncio.Queue[EventRecord]] = set()
        self._seq = 0
        self._added = asyncio.Event()

    def add(
        self,
        kind: str,
        summary: str,
        *,
        at: float,
        slot: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> EventRecord:
        self._seq += 1
        record = EventRecord(
            seq=self._seq,
            at=at,
            kind=kind,
            slot=slot if slot else None,
            summary=summary,
            data=_json_safe(data or {}),
        )
        self._ring.append(record)
        for queue in self._followers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(record)
        self._added.set()
        return record

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; it is checked again after every new event."""
        while not predicate():
            self._added.clear()
            await self._added.wait()

    def recent(self, limit: int) -> list[EventRecord]:
        if limit <= 0:
            return []
        return list(self._ring)[-limit:]

    async def stream(self, follow: bool, limit: int) -> AsyncGenerator[EventRecord, None]:
        queue: asyncio.Queue[EventRecord] = asyncio.Queue(FOLLOWER_QUEUE)
        if follow:
            self._followers.add(queue)
        try:
            for record in self.recent(limit):
                yield record
            while follow:
                yield await queue.get()
        finally:
            self._followers.discard(queue)


def _json_safe(data: dict[str, Any]) -> dict[str, JsonValue]:
    safe: dict[str, JsonValue] = {}
    for key, value in data.items():
        if value is None or isinstance(value, bool | int | float | str):
            safe[key] = value
        elif isinstance(value, list | tuple):
            safe[key] = [
                item if isinstance(item, bool | int | float | str) else str(item) for item in value
            ]
        else:
            safe[key] = str(value)
    return safe
