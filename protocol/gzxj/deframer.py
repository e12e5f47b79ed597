"""Streaming extractor of `{...}` frames from the bytes of a serial line."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.gzxj.constants import END, MAX_FRAME, START
from protocol.gzxj.errors import ChecksumError, FrameError
from protocol.gzxj.frame import Frame, parse_frame

_START = START.encode("ascii")[0]
_END = END.encode("ascii")[0]


@dataclass(slots=True)
class DeframerStats:
    frames: int = 0
    bytes_in: int = 0
    bytes_dropped: int = 0
    crc_errors: int = 0
    bad_frames: int = 0


class Deframer:
    """Extract checked frames from chunks of any size; drop and count everything else.

    Bytes outside braces (line ends, a leading NUL) are dropped. A `{` that arrives before
    the `}` of the frame in progress starts a new frame, so a truncated frame never holds
    back the next one. A candidate longer than MAX_FRAME is dropped without waiting for its
    `}`, so the buffer stays below MAX_FRAME bytes between calls.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.stats = DeframerStats()

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)

    def reset(self) -> None:
        """Discard a partial frame, for example after the port was reopened."""
        self._drop(len(self._buffer))

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        self._buffer += data
        self.stats.bytes_in += len(data)
        frames: list[Frame] = []
        while (candidate := self._next_candidate()) is not None:
            frame = self._checked(candidate)
            if frame is not None:
                frames.append(frame)
        return frames

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self.stats.bytes_dropped += count

    def _next_candidate(self) -> bytes | None:
        """Remove and return the next `{...}` candidate, or None when more bytes are needed."""
        buffer = self._buffer
        while True:
            start = buffer.find(_START)
            self._drop(len(buffer) if start < 0 else start)
            if not buffer:
                return None
            restart = buffer.find(_START, 1)
            end = buffer.find(_END, 1)
            if end > 0 and (restart < 0 or end < restart) and end < MAX_FRAME:
                candidate = bytes(buffer[: end + 1])
                del buffer[: end + 1]
                return candidate
            if restart > 0 and (end < 0 or restart < end):
                self.stats.bad_frames += 1  # truncated: a new frame began before this one ended
                self._drop(restart)
                continue
            if len(buffer) >= MAX_FRAME:
                self.stats.bad_frames += 1
                self._drop(1)
                continue
            return None

    def _checked(self, candidate: bytes) -> Frame | None:
        try:
            frame = parse_frame(candidate.decode("ascii"))
        except ChecksumError:
            self.stats.crc_errors += 1
        except (FrameError, UnicodeDecodeError):
            self.stats.bad_frames += 1
        else:
            self.stats.frames += 1
            return frame
        self.stats.bytes_dropped += len(candidate)
        return None
