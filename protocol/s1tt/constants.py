"""Fixed numbers of the S1TT RS-485 protocol. The summary is docs/protocol-s1tt.md."""

from __future__ import annotations

START = 0xEA
"""First byte of every frame, request and reply alike."""

CRC_SIZE = 2
MIN_FRAME = 1 + 1 + 1 + CRC_SIZE
"""Start, address, at least one payload byte (the command), CRC."""

MAX_PAYLOAD = 64
"""Our bound, not the vendor's: the longest known payload (firmware data, 39 bytes) fits twice."""
MAX_FRAME = 1 + 1 + MAX_PAYLOAD + CRC_SIZE

MAX_ADDRESS = 0xFF
"""The public driver uses board addresses 0 to 4; the wire allows any byte."""

SLOTS_PER_BOARD = 6
"""Slots are numbered 0 to 5 on each board; SLOTS replies carry one bit per slot."""

BANK_SERIAL_SIZE = 10
BANK_FIRMWARE_NAME_SIZE = 16
BANK_FIRMWARE_VERSION_SIZE = 13
MAX_FIRMWARE_CHUNK = 32
"""Largest firmware data chunk the bootloaders accept."""

BAUD_RATE = 115200
INTER_FRAME_GAP_S = 0.02
"""Silence that ends a frame, as in the public driver; USB adapters deliver bytes in bursts."""
REPLY_TIMEOUT_S = 5.0
COMMAND_SPACING_S = 0.05
"""Silence the public driver leaves after each exchange before the next request."""
