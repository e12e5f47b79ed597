"""Fixed numbers of slot-bus protocol version 3. The specification is docs/slot-bus-protocol.md."""

from __future__ import annotations

PROTOCOL_VERSION = 3
"""Version 2 adds GET_BANKS, version 3 GET_SLOT_RANGE and ACK_AND_READ_EVENTS. Every other
layout is unchanged from version 1."""

START = 0xA5
"""First byte of every frame."""

HEADER_SIZE = 5
"""Start, address, sequence, command, payload length."""

CRC_SIZE = 2
MAX_PAYLOAD = 240
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE

MIN_ADDRESS = 0x01
MAX_ADDRESS = 0xF7
"""Board addresses 1..247; 0 and 248..255 are reserved and never valid on the wire."""

RESPONSE_FLAG = 0x80
"""Set in the command byte of every response."""

MAX_SLOTS_PER_BOARD = 12
"""12 slot records of 15 bytes fit one payload with room to spare."""
MAX_EVENTS_PER_READ = 9
MAX_BANKS_PER_READ = 10
"""GET_BANKS records: status, count and 10 records of 23 bytes take 232 of the 240 bytes."""
MIN_EVENT_QUEUE = 32
"""A board keeps at least this many unacknowledged events."""

MIN_UNLOCK_WINDOW_S = 1
MAX_UNLOCK_WINDOW_S = 120
TOKEN_CACHE_SIZE = 32
"""A board remembers the results of at least this many recent unlock tokens."""

RESET_MAGIC = 0x5242
"""Argument of RESET ("RB"), so that a corrupted frame cannot reset a board."""

BANK_ID_SIZE = 8
CHARGE_UNKNOWN = 255
"""Charge value that means the bank's charge could not be read."""

BAUD_RATE = 115200
BITS_PER_BYTE = 10
"""8N1: start bit, 8 data bits, stop bit."""

BOARD_TURNAROUND_S = 0.005
"""A board starts its response within this time after the request's last byte."""

DEFAULT_REPLY_TIMEOUT_S = 0.05
"""Reply budget on top of the wire time of the request and the longest response."""

SETTLE_AFTER_EJECT_S = 3.0
"""Sensors need this long after a lock opens before slot status can be trusted."""


def wire_time_s(byte_count: int, baud_rate: int = BAUD_RATE) -> float:
    """Return the seconds a UART at `baud_rate` (8N1) needs to send `byte_count` bytes."""
    return byte_count * BITS_PER_BYTE / baud_rate
