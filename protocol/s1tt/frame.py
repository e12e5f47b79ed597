"""Frame envelope: build frames, check one frame, and recover frames from a byte stream.

offset  size  field
0       1     START (0xEA)
1       1     board address
2       N     payload: command and arguments, or command, status and reply data
2+N     2     CRC-16/MODBUS over bytes 1..1+N, low byte first

The frame has no length field: a frame ends when the line falls silent. The Deframer
therefore relies on the transport to call `gap()` after INTER_FRAME_GAP_S without a byte,
and splits back-to-back frames by their CRC and the lengths the command table allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.crc import crc16_modbus
from protocol.s1tt.constants import CRC_SIZE, MAX_ADDRESS, MAX_FRAME, MAX_PAYLOAD, MIN_FRAME, START
from protocol.s1tt.errors import ChecksumError, FrameError


@dataclass(frozen=True, slots=True)
class Frame:
    address: int
    payload: bytes  # command byte first

    @property
    def command_id(self) -> int:
        return self.payload[0]

    def encode(self) -> bytes:
        return encode_frame(self.address, self.payload)


def encode_frame(address: int, payload: bytes) -> bytes:
    """Return the wire bytes of one frame; raise FrameError for an out-of-range field."""
    if not 0 <= address <= MAX_ADDRESS:
        raise FrameError(f"address {address} is outside 0..{MAX_ADDRESS}")
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes is outside 1..{MAX_PAYLOAD}")
    body = bytes((address,)) + payload
    crc = crc16_modbus(body)
    return bytes((START,)) + body + crc.to_bytes(CRC_SIZE, "little")


def parse_frame(data: bytes) -> Frame:
    """Check that `data` is exactly one frame and return it; errors name what is wrong."""
    if len(data) < MIN_FRAME:
        raise FrameError(f"frame of {len(data)} bytes is shorter than the minimum {MIN_FRAME}")
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes is longer than the maximum {MAX_FRAME}")
    if data[0] != START:
        raise FrameError(f"first byte is 0x{data[0]:02X}, expected start byte 0x{START:02X}")
    expected = crc16_modbus(data[1:-CRC_SIZE])
    actual = int.from_bytes(data[-CRC_SIZE:], "little")
    if expected != actual:
        raise ChecksumError(expected, actual)
    return Frame(address=data[1], payload=bytes(data[2:-CRC_SIZE]))


def crc_matches(buffer: bytes | bytearray, start: int, end: int) -> bool:
    """Check the CRC of the candidate frame buffer[start:end]."""
    crc = crc16_modbus(memoryview(buffer)[start + 1 : end - CRC_SIZE])
    return buffer[end - 2] == crc & 0xFF and buffer[end - 1] == crc >> 8
