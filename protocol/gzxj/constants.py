"""Fixed numbers of the GZXJ ASCII protocol. The summary is docs/protocol-gzxj.md."""

from __future__ import annotations

START = "{"
END = "}"
ADDRESS_SEPARATOR = "@"
FIELD_SEPARATOR = ","
RECORD_SEPARATOR = ":"
"""Separates the parts of one slot record inside a field."""

CRC_KEY = "GZXJ"
"""Appended to the checksummed text before the CRC is computed."""
CRC_DIGITS = 4

DEFAULT_ADDRESS = "0"
NO_BANK = "NULL"
"""Bank id field of a slot without a readable bank."""

MAX_FRAME = 2048
"""Our bound in characters: a report of 48 slots with 20-character bank ids needs about 1600."""
MAX_TOKEN = 32
"""Maximum length of an id or version text in one field."""
MAX_ID = 10**18 - 1
"""Largest message or order id; the public driver uses millisecond timestamps (13 digits)."""

MAX_SLOTS = 48
MAX_CHARGE = 100

BAUD_RATE = 115200
"""8 data bits, no parity; stations send 1 or 2 stop bits and a receiver must accept both."""
REPORT_INTERVAL_S = 180.0
"""The station sends an unsolicited AC report this often."""
HOST_SILENCE_RESET_S = 600.0
"""The station resets itself after this long without a frame from the host."""
