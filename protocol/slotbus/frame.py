"""Frame envelope: build frames and recover them from a byte stream.

offset  size  field
0       1     START (0xA5)
1       1     board address (1..247)
2       1     sequence number (0..255, echoed by the board)
3       1     command id; RESPONSE_FLAG set in responses
4       1     payload length N (0..240)
5       N     payload
5+N     2     CRC-16/MODBUS over bytes 1..4+N, low byte first
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.crc import crc16_modbus
from protocol.slotbus.constants import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_ADDRESS,
    MAX_PAYLOAD,
    MIN_ADDRESS,
    RESPONSE_FLAG,
    START,
)
from protocol.slotbus.errors import FrameError


@dataclass(frozen=True, slots=True)
class Frame:
    address: int
    sequence: int
    command: int  # raw command byte, RESPONSE_FLAG included
    payload: bytes

    @property
    def is_response(self) -> bool:
        return bool(self.command & RESPONSE_FLAG)

    @property
    def command_id(self) -> int:
        return self.command & ~RESPONSE_FLAG & 0xFF

    def encode(self) -> bytes:
        return encode_frame(self.address, self.sequence, self.command, self.payload)


def encode_frame(address: int, sequence: int, command: int, payload: bytes) -> bytes:
    """Return the wire bytes of one frame; raise FrameError for an out-of-range field."""
    if not MIN_ADDRESS <= address <= MAX_ADDRESS:
        raise FrameError(f"address {address} is outside {MIN_ADDRESS}..{MAX_ADDRESS}")
    if not 0 <= sequence <= 0xFF:
        raise FrameError(f"sequence {sequence} is outside 0..255")
    if not 0 <= command <= 0xFF:
        raise FrameError(f"command {command} is outside 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes((address, sequence, command, len(payload))) + payload
    crc = crc16_modbus(body)
    return bytes((START,)) + body + bytes((crc & 0xFF, crc >> 8))


def _header_plausible(buffer: bytearray, start: int) -> bool:
    """Check the header fields that can be judged before the body arrives."""
    address = buffer[start + 1]
    length = buffer[start + 4]
    return MIN_ADDRESS <= address <= MAX_ADDRESS and length <= MAX_PAYLOAD


@dataclass(slots=True)
class DeframerStats:
    frames: int = 0
    bytes_in: int = 0
    bytes_dropped: int = 0
    crc_errors: int = 0
    bad_headers: int = 0


class Deframer:
    """Streaming frame extractor that resynchronises after garbage or lost bytes.

    `feed` takes chunks of any size and returns the complete frames they finish. Bytes that
    cannot start a frame are dropped and counted. A header with an impossible address or length
    is rejected at once, without waiting for a body. When the frame at the head of the buffer is
    still incomplete but a later START begins a complete frame with a valid CRC, the head is
    treated as garbage, so a truncated frame cannot hold back the next valid one. The buffer
    never keeps more than MAX_FRAME - 1 bytes between calls.
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
        self.stats.bytes_dropped += len(self._buffer)
        self._buffer.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        self._buffer += data
        self.stats.bytes_in += len(data)
        frames: list[Frame] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return frames
            frames.append(frame)

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self.stats.bytes_dropped += count

    def _next_frame(self) -> Frame | None:
        buffer = self._buffer
        while buffer:
            start = buffer.find(START)
            if start < 0:
                self._drop(len(buffer))
                return None
            if start:
                self._drop(start)
            if len(buffer) < HEADER_SIZE:
                return None
            if not _header_plausible(buffer, 0):
                self.stats.bad_headers += 1
                self._drop(1)
                continue
            total = HEADER_SIZE + buffer[4] + CRC_SIZE
            if len(buffer) < total:
                return self._frame_after_incomplete_head()
            frame = _checked_frame(buffer, 0, total)
            if frame is None:
                self.stats.crc_errors += 1
                self._drop(1)
                continue
            del buffer[:total]
            self.stats.frames += 1
            return frame
        return None

    def _frame_after_incomplete_head(self) -> Frame | None:
        """Return a complete valid frame that starts after the incomplete head, if any."""
        buffer = self._buffer
        position = buffer.find(START, 1)
        while position > 0:
            if position + HEADER_SIZE <= len(buffer) and _header_plausible(buffer, position):
                total = HEADER_SIZE + buffer[position + 4] + CRC_SIZE
                if position + total <= len(buffer):
                    frame = _checked_frame(buffer, position, total)
                    if frame is not None:
                        self._drop(position)
                        del buffer[:total]
                        self.stats.frames += 1
                        return frame
            position = buffer.find(START, position + 1)
        return None


def _checked_frame(buffer: bytearray, start: int, total: int) -> Frame | None:
    end = start + total
    crc = crc16_modbus(memoryview(buffer)[start + 1 : end - CRC_SIZE])
    if buffer[end - 2] != crc & 0xFF or buffer[end - 1] != crc >> 8:
        return None
    return Frame(
        address=buffer[start + 1],
        sequence=buffer[start + 2],
        command=buffer[start + 3],
        payload=bytes(buffer[start + HEADER_SIZE : end - CRC_SIZE]),
    )
