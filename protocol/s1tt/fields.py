"""Field codecs that payload layouts are declared from.

Each codec turns one Python value into bytes and back. Integers are little-endian.
`decode` returns the value and the offset after it, and raises PayloadError when the
payload is too short or a value is out of range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.s1tt.errors import PayloadError


class FieldCodec:
    """Base of every field codec."""

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        raise NotImplementedError


def _need(payload: bytes, offset: int, size: int, field_kind: str) -> None:
    if offset + size > len(payload):
        raise PayloadError(
            f"{field_kind}: payload too short ({max(len(payload) - offset, 0)} of {size} bytes)"
        )


@dataclass(frozen=True, slots=True)
class UInt(FieldCodec):
    """Unsigned integer of 1, 2 or 4 bytes, optionally converted to an enum."""

    size: int
    convert: Callable[[int], Any] = int

    def encode(self, value: Any) -> bytes:
        try:
            return int(value).to_bytes(self.size, "little")
        except OverflowError as exc:
            raise PayloadError(f"value {value} does not fit {self.size} bytes") from exc

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        _need(payload, offset, self.size, f"{self.size}-byte integer")
        raw = int.from_bytes(payload[offset : offset + self.size], "little")
        try:
            return self.convert(raw), offset + self.size
        except ValueError as exc:
            raise PayloadError(f"invalid value {raw}") from exc

    @property
    def maximum(self) -> int:
        return (1 << (8 * self.size)) - 1


@dataclass(frozen=True, slots=True)
class Flag(FieldCodec):
    """One byte that is 0 or 1."""

    def encode(self, value: Any) -> bytes:
        return b"\x01" if value else b"\x00"

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        _need(payload, offset, 1, "flag")
        if payload[offset] > 1:
            raise PayloadError(f"flag byte is {payload[offset]}, expected 0 or 1")
        return payload[offset] == 1, offset + 1


@dataclass(frozen=True, slots=True)
class Text(FieldCodec):
    """ASCII text in a fixed number of bytes, padded with NUL bytes."""

    size: int

    def encode(self, value: Any) -> bytes:
        raw = str(value).encode("ascii", errors="strict")
        if len(raw) > self.size or b"\x00" in raw:
            raise PayloadError(f"text {value!r} must be at most {self.size} ASCII characters")
        return raw.ljust(self.size, b"\x00")

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        _need(payload, offset, self.size, f"{self.size}-byte text")
        raw = payload[offset : offset + self.size].split(b"\x00", 1)[0]
        try:
            return raw.decode("ascii"), offset + self.size
        except UnicodeDecodeError as exc:
            raise PayloadError(f"text field is not ASCII: {raw.hex()}") from exc


@dataclass(frozen=True, slots=True)
class RestText(FieldCodec):
    """ASCII text that fills the rest of the payload; trailing NUL bytes are dropped."""

    def encode(self, value: Any) -> bytes:
        raw = str(value).encode("ascii", errors="strict")
        if b"\x00" in raw:
            raise PayloadError("text must not contain NUL bytes")
        return raw

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        raw = payload[offset:].rstrip(b"\x00")
        try:
            return raw.decode("ascii"), len(payload)
        except UnicodeDecodeError as exc:
            raise PayloadError(f"text field is not ASCII: {raw.hex()}") from exc


@dataclass(frozen=True, slots=True)
class Chunk(FieldCodec):
    """A length byte followed by that many bytes."""

    max_size: int

    def encode(self, value: Any) -> bytes:
        data = bytes(value)
        if len(data) > self.max_size:
            raise PayloadError(f"chunk of {len(data)} bytes exceeds {self.max_size}")
        return bytes((len(data),)) + data

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        _need(payload, offset, 1, "chunk length")
        size = payload[offset]
        if size > self.max_size:
            raise PayloadError(f"chunk length {size} exceeds {self.max_size}")
        _need(payload, offset + 1, size, "chunk")
        return bytes(payload[offset + 1 : offset + 1 + size]), offset + 1 + size


@dataclass(frozen=True, slots=True)
class Optional(FieldCodec):
    """A field that later firmware appends; None when the payload ends before it."""

    inner: FieldCodec

    def encode(self, value: Any) -> bytes:
        return b"" if value is None else self.inner.encode(value)

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        if offset >= len(payload):
            return None, offset
        return self.inner.decode(payload, offset)


@dataclass(frozen=True, slots=True)
class Records(FieldCodec):
    """Records of one layout repeated to the end of the payload (one per slot)."""

    item: type[Any]
    max_count: int

    def encode(self, value: Any) -> bytes:
        items = tuple(value)
        if len(items) > self.max_count:
            raise PayloadError(f"{len(items)} records exceed {self.max_count}")
        return b"".join(item.encode() for item in items)

    def decode(self, payload: bytes, offset: int) -> tuple[Any, int]:
        size: int = self.item.size()
        remaining = len(payload) - offset
        if remaining % size:
            raise PayloadError(f"{remaining} bytes are not a whole number of {size}-byte records")
        if remaining // size > self.max_count:
            raise PayloadError(f"{remaining // size} records exceed {self.max_count}")
        items = [
            self.item.decode(payload[start : start + size])
            for start in range(offset, len(payload), size)
        ]
        return tuple(items), len(payload)


def u8(convert: Callable[[int], Any] = int) -> UInt:
    return UInt(1, convert)


def u16() -> UInt:
    return UInt(2)


def u32() -> UInt:
    return UInt(4)
