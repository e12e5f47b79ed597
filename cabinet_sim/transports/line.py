"""The cabinet's end of a serial line: feed the master's bytes in, send responses back in time.

Responses leave after their delay, one at a time as on a half-duplex bus, and with pacing on
at the baud rate (10 bits per byte at 8N1). Optional shaping splits, drops and delays the bytes
the master receives, for tests of the master's receive path.

With pacing on, the line keeps two instants of the simulated wire: when the master's bytes
read so far have fully arrived (`_incoming_end`), and when the cabinet's bytes written so far
have left (`_line_free_at`). A response starts its turnaround after the request's last byte
and is written in slices, each at the instant its last byte would reach the master. Every
instant is computed from the wire, never from the time a previous write happened, so a late
timer delays one slice and not the ones after it.
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
from protocol.slotbus.constants import BITS_PER_BYTE, wire_time_s

logger = logging.getLogger(__name__)

TICK_S = 0.05
"""Real seconds between catch-ups of a self-running clock, so timers fire without traffic."""
PACING_SLICE_S = 0.002
"""With pacing on, bytes are written in slices of about this much wire time."""
TIMER_LEAD_S = 0.0005
"""How long before a slice's instant the line sets its timer.

On Linux, asyncio's default loop waits in epoll, which takes whole milliseconds, and CPython
(selectors.EpollSelector.select, 3.11) rounds the timeout up, so a timer fires between its
instant and about 1 ms later. Set 0.5 ms early, it fires within about 0.5 ms either side.
"""

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
        self._outgoing: list[tuple[float, int, tuple[bytes, ...]]] = []
        """Transmissions as (earliest start, order, chunks), earliest first."""
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._line_free_at = 0.0
        self._incoming_end = 0.0

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
        self._queue(asyncio.get_running_loop().time() + transmission.delay_s, transmission.data)

    async def _receive_loop(self, read: ReadBytes) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await read()
            if not data:
                return
            self._accept(data, loop.time())

    def _accept(self, data: bytes, arrival: float) -> None:
        """Feed bytes read at `arrival` to the cabinet and queue what it sends back."""
        request_end = self._note_arrival(len(data), arrival)
        for transmission in self.cabinet.receive(data):
            # An echo runs alongside the master's bytes, but a response follows the request.
            sent_after = arrival if transmission.echo else request_end
            self._queue(
                sent_after + transmission.delay_s + self.shaping.extra_delay_s, transmission.data
            )

    def _note_arrival(self, size: int, arrival: float) -> float:
        """Return when the last of `size` bytes read at `arrival` arrives on the simulated wire.

        The master's bytes reach the process at once, but on a real line they follow each
        other at the baud rate, so a chunk starts when it was read or when the chunk before it
        ended, whichever is later.
        """
        if not self.pacing:
            return arrival
        self._incoming_end = max(arrival, self._incoming_end) + self._wire_time(size)
        return self._incoming_end

    def _queue(self, earliest_start: float, data: bytes) -> None:
        chunks = tuple(self._chunks(self._drop_bytes(data)))
        if not chunks:
            return
        heapq.heappush(self._outgoing, (earliest_start, next(self._order), chunks))
        self._changed.set()

    async def _send_loop(self, write: WriteBytes) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._outgoing:
                self._changed.clear()
                await self._changed.wait()
                continue
            earliest_start, _, chunks = self._outgoing[0]
            start = max(earliest_start, self._line_free_at)
            # Wait for the first slice's instant, not the start, to save one wake-up. Until
            # then an earlier transmission queued meanwhile still goes first.
            wait_s = start + self._wire_time(len(chunks[0])) - TIMER_LEAD_S - loop.time()
            if wait_s > 0:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait_s)
                continue
            heapq.heappop(self._outgoing)
            await self._transmit(start, chunks, write)

    async def _transmit(self, start: float, chunks: tuple[bytes, ...], write: WriteBytes) -> None:
        """Write each chunk at the instant its last byte arrives, the first byte sent at `start`."""
        for instant, chunk in zip(self._write_instants(start, chunks), chunks, strict=True):
            await self._sleep_until(instant - TIMER_LEAD_S)
            await write(chunk)
            self._line_free_at = instant

    def _write_instants(self, start: float, chunks: tuple[bytes, ...]) -> list[float]:
        """Return the instant at which each chunk's last byte arrives, from `start`.

        Without pacing a chunk takes no wire time. `Shaping.chunk_gap_s` separates chunks.
        """
        instants: list[float] = []
        instant = start
        for index, chunk in enumerate(chunks):
            if index > 0:
                instant += self.shaping.chunk_gap_s
            instant += self._wire_time(len(chunk))
            instants.append(instant)
        return instants

    def _wire_time(self, size: int) -> float:
        return wire_time_s(size, self.baud_rate) if self.pacing else 0.0

    def _chunks(self, data: bytes) -> list[bytes]:
        size_limit = self.shaping.max_chunk
        if self.pacing:
            paced = max(1, int(self.baud_rate / BITS_PER_BYTE * PACING_SLICE_S))
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
