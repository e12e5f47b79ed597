"""Streaming frame extractor for a line whose frames end at a silent gap.

An S1TT frame has no length field, so a receiver learns where a frame ends from the
silence after it. The transport calls `feed` with every chunk it reads and `gap` once the
line has been silent for INTER_FRAME_GAP_S; `gap` returns the frames of the segment that
just ended. Inside a segment, back-to-back frames (a request echoed by the adapter and
its reply, for example) are split where a CRC matches and the bytes form a request or
reply of a known command. The last frame of a segment only needs a matching CRC, so a
frame with an unknown command still reaches the codec, which names the command.

A chance CRC match splits a frame wrongly with a probability of about 2**-16 per
candidate end. The lost frame then shows up as a reply timeout, not as wrong data.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.s1tt.codec import fits_table
from protocol.s1tt.constants import CRC_SIZE, MAX_FRAME, MIN_FRAME, START
from protocol.s1tt.frame import Frame, crc_matches

BUFFER_LIMIT = 2 * MAX_FRAME
"""Bytes held without a gap before `feed` splits the oldest of them by CRC alone."""


@dataclass(slots=True)
class DeframerStats:
    frames: int = 0
    bytes_in: int = 0
    bytes_dropped: int = 0
    gaps: int = 0


class Deframer:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self.stats = DeframerStats()

    @property
    def pending(self) -> int:
        """Bytes held until the next gap."""
        return len(self._buffer)

    def reset(self) -> None:
        """Discard held bytes, for example after the port was reopened."""
        self.stats.bytes_dropped += len(self._buffer)
        self._buffer.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Hold `data` until the next gap; return frames only when the buffer limit forces it."""
        self._buffer += data
        self.stats.bytes_in += len(data)
        if len(self._buffer) <= BUFFER_LIMIT:
            return []
        return self._split(final=False)

    def gap(self) -> list[Frame]:
        """End the current segment and return its frames; the rest of it is dropped."""
        self.stats.gaps += 1
        return self._split(final=True)

    def _split(self, *, final: bool) -> list[Frame]:
        buffer = self._buffer
        frames: list[Frame] = []
        position = 0
        while position < len(buffer):
            if not final and len(buffer) - position < MAX_FRAME:
                break
            end = self._frame_end(position, final) if buffer[position] == START else None
            if end is None:
                self.stats.bytes_dropped += 1
                position += 1
                continue
            frames.append(Frame(buffer[position + 1], bytes(buffer[position + 2 : end - CRC_SIZE])))
            position = end
        del buffer[:position]
        self.stats.frames += len(frames)
        return frames

    def _frame_end(self, start: int, final: bool) -> int | None:
        """Return the end of a frame that starts at `start`, or None when there is none."""
        buffer = self._buffer
        size = len(buffer) - start
        if final and MIN_FRAME <= size <= MAX_FRAME and crc_matches(buffer, start, len(buffer)):
            return len(buffer)
        last = min(len(buffer), start + MAX_FRAME)
        for end in range(start + MIN_FRAME, last + 1):
            if not crc_matches(buffer, start, end):
                continue
            frame = Frame(buffer[start + 1], bytes(buffer[start + 2 : end - CRC_SIZE]))
            if fits_table(frame):
                return end
        return None
