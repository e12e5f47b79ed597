"""Frame envelope: `{address@COMMAND,field,...,field,crc}`.

The CRC is CRC-16/MODBUS over the text from the command word up to and including the
comma before the CRC, followed by the ASCII key "GZXJ", written as 4 hex digits. This
codec writes lower-case digits, like the example value in the public driver's parser, and
accepts both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.crc import crc16_modbus
from protocol.gzxj.constants import (
    ADDRESS_SEPARATOR,
    CRC_DIGITS,
    CRC_KEY,
    END,
    FIELD_SEPARATOR,
    MAX_FRAME,
    START,
)
from protocol.gzxj.errors import ChecksumError, FrameError

_ADDRESS = re.compile(r"[0-9A-Za-z]{1,3}")
_COMMAND = re.compile(r"[A-Z]{2}")
_CRC = re.compile(r"[0-9A-Fa-f]{4}")
_FORBIDDEN = frozenset(START + END + ADDRESS_SEPARATOR + FIELD_SEPARATOR)


@dataclass(frozen=True, slots=True)
class Frame:
    address: str
    command: str
    fields: tuple[str, ...]

    def encode(self) -> str:
        return encode_frame(self.address, self.command, self.fields)


def checksum(command: str, fields: tuple[str, ...] | list[str]) -> int:
    """Return the CRC of a frame with this command word and these fields."""
    text = command + "".join(FIELD_SEPARATOR + field for field in fields) + FIELD_SEPARATOR
    return crc16_modbus((text + CRC_KEY).encode("ascii"))


def encode_frame(address: str, command: str, fields: tuple[str, ...] | list[str]) -> str:
    """Return the text of one frame; raise FrameError for a value that cannot be framed."""
    if not _ADDRESS.fullmatch(address):
        raise FrameError(f"address {address!r} must be 1 to 3 letters or digits")
    if not _COMMAND.fullmatch(command):
        raise FrameError(f"command {command!r} must be two upper-case letters")
    for field in fields:
        if not field.isascii() or not field.isprintable() or _FORBIDDEN & set(field):
            raise FrameError(f"field {field!r} must be printable ASCII without {{}}@,")
    crc = checksum(command, fields)
    body = FIELD_SEPARATOR.join((command, *fields, f"{crc:0{CRC_DIGITS}x}"))
    text = f"{START}{address}{ADDRESS_SEPARATOR}{body}{END}"
    if len(text) > MAX_FRAME:
        raise FrameError(f"frame of {len(text)} characters exceeds {MAX_FRAME}")
    return text


def parse_frame(text: str) -> Frame:
    """Check that `text` is exactly one frame and return it; errors name what is wrong."""
    if len(text) > MAX_FRAME:
        raise FrameError(f"frame of {len(text)} characters exceeds {MAX_FRAME}")
    if not text.startswith(START) or not text.endswith(END) or len(text) < 2:
        raise FrameError(f"a frame starts with {START!r} and ends with {END!r}")
    inner = text[1:-1]
    if START in inner or END in inner:
        raise FrameError("a frame contains exactly one opening and one closing brace")
    if not inner.isascii() or not inner.isprintable():
        raise FrameError("a frame contains printable ASCII characters only")
    address, separator, rest = inner.partition(ADDRESS_SEPARATOR)
    if not separator or not _ADDRESS.fullmatch(address):
        raise FrameError(f"missing or invalid address before {ADDRESS_SEPARATOR!r}")
    tokens = rest.split(FIELD_SEPARATOR)
    if len(tokens) < 2:
        raise FrameError(f"a frame needs a command word and a CRC after the address: {rest!r}")
    if not _COMMAND.fullmatch(tokens[0]):
        raise FrameError(f"missing command word after {ADDRESS_SEPARATOR!r}: {rest[:8]!r}")
    if ADDRESS_SEPARATOR in rest:
        raise FrameError(f"unexpected {ADDRESS_SEPARATOR!r} after the address")
    if not _CRC.fullmatch(tokens[-1]):
        raise FrameError(f"CRC {tokens[-1]!r} is not {CRC_DIGITS} hex digits")
    command, fields = tokens[0], tuple(tokens[1:-1])
    expected = checksum(command, fields)
    actual = int(tokens[-1], 16)
    if expected != actual:
        raise ChecksumError(expected, actual)
    return Frame(address, command, fields)
