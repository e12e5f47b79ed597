"""Payload layouts of S1TT requests and replies, as frozen dataclasses.

Each layout declares its fields once in `FIELDS`, in the order of the dataclass fields and
of the bytes on the wire. Request layouts start after the command byte; reply layouts start
after the command and status bytes. Slot numbers are 0-based and local to the board.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from protocol.s1tt.codes import BankState
from protocol.s1tt.constants import (
    BANK_FIRMWARE_NAME_SIZE,
    BANK_FIRMWARE_VERSION_SIZE,
    BANK_SERIAL_SIZE,
    MAX_FIRMWARE_CHUNK,
    SLOTS_PER_BOARD,
)
from protocol.s1tt.errors import PayloadError
from protocol.s1tt.fields import (
    Chunk,
    FieldCodec,
    Flag,
    Optional,
    Records,
    RestText,
    Text,
    UInt,
    u8,
    u16,
    u32,
)


class Message:
    """Base of every payload layout."""

    FIELDS: ClassVar[tuple[tuple[str, FieldCodec], ...]] = ()

    @classmethod
    def size(cls) -> int:
        """Size in bytes of a layout made only of fixed-size fields."""
        total = 0
        for _, codec in cls.FIELDS:
            if isinstance(codec, UInt | Text):
                total += codec.size
            elif isinstance(codec, Flag):
                total += 1
            else:
                raise TypeError(f"{cls.__name__} has no fixed size")
        return total

    def encode(self) -> bytes:
        return b"".join(codec.encode(getattr(self, name)) for name, codec in self.FIELDS)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Decode a whole payload; bytes left after the last field are an error."""
        values: dict[str, Any] = {}
        offset = 0
        for name, codec in cls.FIELDS:
            try:
                values[name], offset = codec.decode(payload, offset)
            except PayloadError as exc:
                raise PayloadError(f"{cls.__name__}.{name}: {exc}") from exc
        if offset != len(payload):
            raise PayloadError(
                f"{cls.__name__}: {len(payload) - offset} unexpected bytes after the payload"
            )
        return cls(**values)


def message_fields(message: Message) -> dict[str, Any]:
    """Return the message as a dict of its fields, for logs and JSON output."""
    return {field.name: getattr(message, field.name) for field in fields(message)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Empty(Message):
    pass


@dataclass(frozen=True, slots=True)
class SlotRef(Message):
    slot: int

    FIELDS = (("slot", u8()),)


@dataclass(frozen=True, slots=True)
class ChargeRequest(Message):
    slot: int
    enable: bool

    FIELDS = (("slot", u8()), ("enable", Flag()))


@dataclass(frozen=True, slots=True)
class PdoRequest(Message):
    slot: int
    # NOTE: the public driver sends these as single raw bytes and names no unit.
    voltage: int
    current: int

    FIELDS = (("slot", u8()), ("voltage", u8()), ("current", u8()))


@dataclass(frozen=True, slots=True)
class LedRequest(Message):
    # The public driver numbers LEDs in reverse: LED 5 - n sits at slot n.
    led: int
    on: bool

    FIELDS = (("led", u8()), ("on", Flag()))


@dataclass(frozen=True, slots=True)
class BankInfoRequest(Message):
    slot: int
    serial: str  # up to 10 ASCII characters
    manufactured_at: int  # Unix time, seconds
    cycles: int

    FIELDS = (
        ("slot", u8()),
        ("serial", Text(BANK_SERIAL_SIZE)),
        ("manufactured_at", u32()),
        ("cycles", u16()),
    )


@dataclass(frozen=True, slots=True)
class BatteryInfoRequest(Message):
    slot: int
    total_charge_mah: int
    current_charge_mah: int
    cutoff_charge_mah: int

    FIELDS = (
        ("slot", u8()),
        ("total_charge_mah", u16()),
        ("current_charge_mah", u16()),
        ("cutoff_charge_mah", u16()),
    )


@dataclass(frozen=True, slots=True)
class BankStatus(Message):
    """STATUS reply: what the bank in the slot reports about itself."""

    serial: str
    manufactured_at: int  # Unix time, seconds
    total_charge_mah: int
    current_charge_mah: int
    cutoff_charge_mah: int
    cycles: int
    state: BankState
    average_capacity_mah: int | None  # learned full capacity; absent from older bank firmware

    FIELDS = (
        ("serial", Text(BANK_SERIAL_SIZE)),
        ("manufactured_at", u32()),
        ("total_charge_mah", u16()),
        ("current_charge_mah", u16()),
        ("cutoff_charge_mah", u16()),
        ("cycles", u16()),
        ("state", u8(BankState)),
        ("average_capacity_mah", Optional(u16())),
    )


@dataclass(frozen=True, slots=True)
class SlotBits:
    """One slot of a SLOTS reply."""

    slot: int
    filled: bool
    locked: bool


@dataclass(frozen=True, slots=True)
class SlotsReply(Message):
    """SLOTS reply: bit n of each mask is slot n."""

    filled_mask: int
    # NOTE: the public driver treats a clear lock bit as "locked with a bank inside"; the
    # meaning of a set bit is not documented beyond that.
    lock_mask: int

    FIELDS = (("filled_mask", u8()), ("lock_mask", u8()))

    @property
    def slots(self) -> tuple[SlotBits, ...]:
        return tuple(
            SlotBits(
                slot=slot,
                filled=bool(self.filled_mask >> slot & 1),
                locked=not self.lock_mask >> slot & 1,
            )
            for slot in range(SLOTS_PER_BOARD)
        )


@dataclass(frozen=True, slots=True)
class BankFirmware(Message):
    name: str
    version: str

    FIELDS = (
        ("name", Text(BANK_FIRMWARE_NAME_SIZE)),
        ("version", Text(BANK_FIRMWARE_VERSION_SIZE)),
    )


@dataclass(frozen=True, slots=True)
class FirmwareVersion(Message):
    version: str

    FIELDS = (("version", RestText()),)


@dataclass(frozen=True, slots=True)
class StatsRequest(Message):
    reset: bool  # clear the counters after reading them

    FIELDS = (("reset", Flag()),)


@dataclass(frozen=True, slots=True)
class LinkCounters(Message):
    attempts: int
    retries: int
    failures: int

    FIELDS = (("attempts", u16()), ("retries", u16()), ("failures", u16()))


@dataclass(frozen=True, slots=True)
class LinkStats(Message):
    slots: tuple[LinkCounters, ...]  # one record per slot, slot 0 first

    FIELDS = (("slots", Records(LinkCounters, SLOTS_PER_BOARD)),)


@dataclass(frozen=True, slots=True)
class UnlockCount(Message):
    unlocks: int

    FIELDS = (("unlocks", u32()),)


@dataclass(frozen=True, slots=True)
class UnlockStats(Message):
    slots: tuple[UnlockCount, ...]  # one record per slot, slot 0 first

    FIELDS = (("slots", Records(UnlockCount, SLOTS_PER_BOARD)),)


@dataclass(frozen=True, slots=True)
class FwuHello(Message):
    """What a bootloader reports in reply to HELLO."""

    bootloader_major: int
    bootloader_minor: int
    app_present: bool
    app_version: int
    max_chunk: int
    page_size: int
    slot_size: int

    FIELDS = (
        ("bootloader_major", u8()),
        ("bootloader_minor", u8()),
        ("app_present", Flag()),
        ("app_version", u32()),
        ("max_chunk", u16()),
        ("page_size", u16()),
        ("slot_size", u32()),
    )


@dataclass(frozen=True, slots=True)
class FwuBegin(Message):
    image_size: int
    image_crc32: int
    version: int

    FIELDS = (("image_size", u32()), ("image_crc32", u32()), ("version", u32()))


@dataclass(frozen=True, slots=True)
class FwuData(Message):
    offset: int
    data: bytes

    FIELDS = (("offset", u32()), ("data", Chunk(MAX_FIRMWARE_CHUNK)))


@dataclass(frozen=True, slots=True)
class FwuDataAck(Message):
    next_offset: int  # offset the bootloader expects next

    FIELDS = (("next_offset", u32()),)


@dataclass(frozen=True, slots=True)
class BankFwuBegin(Message):
    slot: int
    image_size: int
    image_crc32: int
    version: int

    FIELDS = (("slot", u8()), *FwuBegin.FIELDS)


@dataclass(frozen=True, slots=True)
class BankFwuData(Message):
    slot: int
    offset: int
    data: bytes

    FIELDS = (("slot", u8()), *FwuData.FIELDS)
