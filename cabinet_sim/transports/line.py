"""The cabinet's end of a serial line: feed the master's bytes in, send responses back in time.

Responses leave after their delay, one at a time as on a half-duplex bus, and with pacing on
at the baud rate (10 bits per byte at 8N1). Optional shaping splits, drops and delays the bytes
the master receives, for tests of the master's receive path.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cabinet_sim.cabinet import Cabinet, Transmission
from cabinet_sim.clock import ManualClock
from protocol.slotbus.constants import wire_time_s

logger = logging.getLogger(__name__)

TICK_S = 0.05
"""Real seconds between catch-ups of a self-running clock, so timers fire without traffic."""
PACING_SLICE_S = 0.002
"""With pacing on, bytes are written in slices of about this much wire time."""

ReadBytes = Callable[[], Awaitable[bytes]]
WriteBytes = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Shaping:
    """Distortions of the bytes the master receives. All off by default."""

    max_chunk: int | None = None
    """Split every transmission into chunks of 1..max_chunk bytes, written separately."""
    chunk_gap_s: float = 0.0
    drop_byte_rate: float = 0.0
    extra_delay_s: float = 0.0
    seed: int = 0


class CabinetLine:
    """Serves one connection: reads the master's bytes and writes the cabinet's responses."""

    def __init__(
        self,
        cabinet: Cabinet,
        *,
        baud_rate: int | None = None,
        pacing: bool | None = None,
        shaping: Shaping | None = None,
    ) -> None:
        self.cabinet = cabinet
        self.baud_rate = baud_rate if baud_rate is not None else cabinet.config.baud_rate
        self.pacing = pacing if pacing is not None else cabinet.config.pacing
        self.shaping = shaping if shaping is not None else Shaping()
        self._rng = random.Random(self.shaping.seed)
        self._outgoing: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._line_free_at = 0.0

    async def serve(self, read: ReadBytes, write: WriteBytes) -> None:
        """Serve until `read` returns b"" (end of stream)."""
        unsubscribe = self.cabinet.subscribe_unsolicited(self._queue_unsolicited)
        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(self._send_loop(write), name="cabinet-line-send")
                try:
                    await self._receive_loop(read)
                finally:
                    sender.cancel()
        finally:
            unsubscribe()

    def _queue_unsolicited(self, transmission: Transmission) -> None:
        """Queue a frame a board sends on its own, such as a GZXJ slot report."""
        due = asyncio.get_running_loop().time() + transmission.delay_s
        heapq.heappush(self._outgoing, (due, next(self._order), transmission.data))
        self._changed.set()

    async def _receive_loop(self, read: ReadBytes) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await read()
            if not data:
                return
            arrival = loop.time()
            # The last byte of a request arrives one wire time after its first on a real UART.
            on_wire = wire_time_s(len(data), self.baud_rate) if self.pacing else 0.0
            for transmission in self.cabinet.receive(data):
                due = arrival + transmission.delay_s + self.shaping.extra_delay_s
                if not transmission.echo:
                    due += on_wire
                heapq.heappush(self._outgoing, (due, next(self._order), transmission.data))
            self._changed.set()

    async def _send_loop(self, write: WriteBytes) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._outgoing:
                self._changed.clear()
                await self._changed.wait()
                continue
            due = max(self._outgoing[0][0], self._line_free_at)
            wait_s = due - loop.time()
            if wait_s > 0:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait_s)
                continue
            _, _, data = heapq.heappop(self._outgoing)
            await self._transmit(data, write)

    async def _transmit(self, data: bytes, write: WriteBytes) -> None:
        loop = asyncio.get_running_loop()
        data = self._drop_bytes(data)
        for chunk in self._chunks(data):
            start = max(loop.time(), self._line_free_at)
            if self.pacing:
                await self._sleep_until(start)
            await write(chunk)
            if self.pacing:
                self._line_free_at = start + wire_time_s(len(chunk), self.baud_rate)
            if self.shaping.chunk_gap_s > 0:
                await asyncio.sleep(self.shaping.chunk_gap_s)

    def _chunks(self, data: bytes) -> list[bytes]:
        size_limit = self.shaping.max_chunk
        if self.pacing:
            paced = max(1, int(self.baud_rate / 10 * PACING_SLICE_S))
            size_limit = paced if size_limit is None else min(size_limit, paced)
        if size_limit is None:
            return [data] if data else []
        chunks = []
        offset = 0
        while offset < len(data):
            size = self._rng.randint(1, size_limit) if self.shaping.max_chunk else size_limit
            chunks.append(data[offset : offset + size])
            offset += size
        return chunks

    def _drop_bytes(self, data: bytes) -> bytes:
        rate = self.shaping.drop_byte_rate
        if rate <= 0:
            return data
        return bytes(byte for byte in data if self._rng.random() >= rate)

    @staticmethod
    async def _sleep_until(when: float) -> None:
        delay = when - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)


async def keep_up(cabinet: Cabinet, interval_s: float = TICK_S) -> None:
    """Bring `cabinet` up to its clock every `interval_s` until cancelled.

    Timers (take windows, a port coming back) then fire on time even when the line is idle.
    A ManualClock moves only through `advance`, so this returns at once for it.
    """
    if isinstance(cabinet.clock, ManualClock):
        return
    while True:
        cabinet.update()
        await asyncio.sleep(interval_s)
