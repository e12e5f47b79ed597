"""Payload layouts of slot-bus requests and responses, as frozen dataclasses.

Each message declares its fixed fields once in `FIELDS` (name, struct code, converter), in
the order of the dataclass fields. A message with a trailing counted list names it in
`ITEMS`: one count byte, then that many records of the item type. All integers are
little-endian. Status bytes are not part of these layouts; the codec adds and strips them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from protocol.slotbus.codes import (
    BankFault,
    Capability,
    ChargingState,
    EventKind,
    LockState,
    SelfTestCheck,
    SlotFault,
    SlotFlag,
    TokenState,
    UnlockCode,
)
from protocol.slotbus.constants import BANK_ID_SIZE
from protocol.slotbus.errors import PayloadError

Converter = Callable[[Any], Any]

NO_BANK_ID = bytes(BANK_ID_SIZE)


def _bank_id(value: Any) -> bytes:
    return bytes(value)


def _strict_bool(value: Any) -> bool:
    if value not in (0, 1):
        raise ValueError(f"{value} is not a boolean (0 or 1)")
    return bool(value)


def bank_id_hex(bank_id: bytes) -> str | None:
    """Return the bank id as upper-case hex, or None for the all-zero "no id" value."""
    return None if bank_id == NO_BANK_ID else bank_id.hex().upper()


def bank_id_from_hex(text: str) -> bytes:
    """Parse a bank id of 4 to 8 bytes written in hex; shorter ids are zero-padded on the left."""
    raw = bytes.fromhex(text)
    if not 4 <= len(raw) <= BANK_ID_SIZE:
        raise ValueError(f"bank id {text!r} must be 4 to {BANK_ID_SIZE} bytes of hex")
    return raw.rjust(BANK_ID_SIZE, b"\x00")


class Message:
    """Base of every payload layout."""

    FIELDS: ClassVar[tuple[tuple[str, str, Converter], ...]] = ()
    ITEMS: ClassVar[tuple[str, type[Message]] | None] = None
    _struct: ClassVar[struct.Struct]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._struct = struct.Struct("<" + "".join(code for _, code, _ in cls.FIELDS))

    @classmethod
    def size(cls) -> int:
        """Size of the fixed part in bytes."""
        return cls._struct.size

    def encode(self) -> bytes:
        try:
            head = self._struct.pack(*(getattr(self, name) for name, _, _ in self.FIELDS))
        except struct.error as exc:
            raise PayloadError(f"cannot encode {type(self).__name__}: {exc}") from exc
        if self.ITEMS is None:
            return head
        items: tuple[Message, ...] = getattr(self, self.ITEMS[0])
        if len(items) > 0xFF:
            raise PayloadError(f"{type(self).__name__} has {len(items)} items, limit 255")
        return head + bytes((len(items),)) + b"".join(item.encode() for item in items)

    @classmethod
    def decode(cls, payload: bytes, *, allow_trailing: bool = False) -> Self:
        """Decode a payload; trailing bytes are an error unless `allow_trailing` is set."""
        message, used = cls._decode_from(payload, 0)
        if used != len(payload) and not allow_trailing:
            raise PayloadError(
                f"{cls.__name__}: {len(payload) - used} unexpected bytes after the payload"
            )
        return message

    @classmethod
    def _decode_from(cls, payload: bytes, offset: int) -> tuple[Self, int]:
        end = offset + cls._struct.size
        if end > len(payload):
            raise PayloadError(
                f"{cls.__name__}: payload too short ({len(payload) - offset} of "
                f"{cls._struct.size} bytes)"
            )
        raw = cls._struct.unpack_from(payload, offset)
        values: dict[str, Any] = {}
        for (name, _, convert), value in zip(cls.FIELDS, raw, strict=True):
            try:
                values[name] = convert(value)
            except ValueError as exc:
                raise PayloadError(f"{cls.__name__}.{name}: invalid value {value!r}") from exc
        if cls.ITEMS is not None:
            items, end = cls._decode_items(payload, end)
            values[cls.ITEMS[0]] = items
        return cls(**values), end

    @classmethod
    def _decode_items(cls, payload: bytes, offset: int) -> tuple[tuple[Message, ...], int]:
        assert cls.ITEMS is not None  # only called when ITEMS is declared
        item_type = cls.ITEMS[1]
        if offset >= len(payload):
            raise PayloadError(f"{cls.__name__}: item count missing")
        count = payload[offset]
        offset += 1
        items = []
        for _ in range(count):
            item, offset = item_type._decode_from(payload, offset)
            items.append(item)
        return tuple(items), offset


@dataclass(frozen=True, slots=True)
class Empty(Message):
    pass


@dataclass(frozen=True, slots=True)
class Identity(Message):
    protocol_version: int
    firmware_major: int
    firmware_minor: int
    firmware_patch: int
    hardware_revision: int
    board_id: int
    boot_count: int
    slot_count: int
    max_charging: int
    event_capacity: int
    capabilities: Capability

    FIELDS = (
        ("protocol_version", "B", int),
        ("firmware_major", "B", int),
        ("firmware_minor", "B", int),
        ("firmware_patch", "B", int),
        ("hardware_revision", "B", int),
        ("board_id", "Q", int),
        ("boot_count", "H", int),
        ("slot_count", "B", int),
        ("max_charging", "B", int),
        ("event_capacity", "B", int),
        ("capabilities", "H", Capability),
    )

    @property
    def firmware_version(self) -> str:
        return f"{self.firmware_major}.{self.firmware_minor}.{self.firmware_patch}"


@dataclass(frozen=True, slots=True)
class SlotStatus(Message):
    slot: int
    flags: SlotFlag
    lock: LockState
    charging: ChargingState
    charge: int  # percent, or CHARGE_UNKNOWN
    bank_id: bytes  # NO_BANK_ID unless SlotFlag.ID_VALID
    faults: SlotFault

    FIELDS = (
        ("slot", "B", int),
        ("flags", "B", SlotFlag),
        ("lock", "B", LockState),
        ("charging", "B", ChargingState),
        ("charge", "B", int),
        ("bank_id", f"{BANK_ID_SIZE}s", _bank_id),
        ("faults", "H", SlotFault),
    )


@dataclass(frozen=True, slots=True)
class SlotsStatus(Message):
    slots: tuple[SlotStatus, ...]

    ITEMS = ("slots", SlotStatus)


@dataclass(frozen=True, slots=True)
class SlotRef(Message):
    slot: int

    FIELDS = (("slot", "B", int),)


@dataclass(frozen=True, slots=True)
class BankData(Message):
    slot: int
    bank_id: bytes
    charge: int  # percent, or CHARGE_UNKNOWN
    voltage_mv: int
    current_ma: int  # positive into the bank
    temperature_dc: int  # 0.1 degC
    cycles: int
    health: int  # state of health, percent
    capacity_mah: int  # design capacity
    faults: BankFault

    FIELDS = (
        ("slot", "B", int),
        ("bank_id", f"{BANK_ID_SIZE}s", _bank_id),
        ("charge", "B", int),
        ("voltage_mv", "H", int),
        ("current_ma", "h", int),
        ("temperature_dc", "h", int),
        ("cycles", "H", int),
        ("health", "B", int),
        ("capacity_mah", "H", int),
        ("faults", "H", BankFault),
    )


@dataclass(frozen=True, slots=True)
class SlotRange(Message):
    first_slot: int
    count: int  # slots from first_slot on; GET_BANKS takes 1..MAX_BANKS_PER_READ

    FIELDS = (("first_slot", "B", int), ("count", "B", int))


@dataclass(frozen=True, slots=True)
class BankBatch(Message):
    banks: tuple[BankData, ...]  # occupied slots of the range, in slot order

    ITEMS = ("banks", BankData)


@dataclass(frozen=True, slots=True)
class UnlockRequest(Message):
    slot: int
    window_s: int
    token: int

    FIELDS = (("slot", "B", int), ("window_s", "B", int), ("token", "I", int))


@dataclass(frozen=True, slots=True)
class UnlockResult(Message):
    slot: int
    token: int
    result: UnlockCode
    repeated: bool  # true when the token was seen before and this is the first result again

    FIELDS = (
        ("slot", "B", int),
        ("token", "I", int),
        ("result", "B", UnlockCode),
        ("repeated", "B", _strict_bool),
    )


@dataclass(frozen=True, slots=True)
class TokenRef(Message):
    token: int

    FIELDS = (("token", "I", int),)


@dataclass(frozen=True, slots=True)
class UnlockStatus(Message):
    token: int
    state: TokenState
    slot: int  # 0 when the state is UNKNOWN
    bank_id: bytes  # the bank that was in the slot when it opened

    FIELDS = (
        ("token", "I", int),
        ("state", "B", TokenState),
        ("slot", "B", int),
        ("bank_id", f"{BANK_ID_SIZE}s", _bank_id),
    )


@dataclass(frozen=True, slots=True)
class LockResult(Message):
    slot: int
    lock: LockState

    FIELDS = (("slot", "B", int), ("lock", "B", LockState))


@dataclass(frozen=True, slots=True)
class ChargingRequest(Message):
    slot: int
    enable: bool

    FIELDS = (("slot", "B", int), ("enable", "B", _strict_bool))


@dataclass(frozen=True, slots=True)
class ChargingResult(Message):
    slot: int
    charging: ChargingState

    FIELDS = (("slot", "B", int), ("charging", "B", ChargingState))


@dataclass(frozen=True, slots=True)
class SelfTestResult(Message):
    slot: int
    failed: SelfTestCheck  # empty when every check passed

    FIELDS = (("slot", "B", int), ("failed", "B", SelfTestCheck))


@dataclass(frozen=True, slots=True)
class ResetRequest(Message):
    magic: int

    FIELDS = (("magic", "H", int),)


@dataclass(frozen=True, slots=True)
class EventsRequest(Message):
    max_events: int

    FIELDS = (("max_events", "B", int),)


@dataclass(frozen=True, slots=True)
class BoardEvent(Message):
    event_id: int
    kind: EventKind
    slot: int  # 0 for board-wide events
    uptime_ms: int  # board uptime when the event latched, wraps after about 49 days
    token: int  # unlock token for UNLOCK_* events, else 0
    bank_id: bytes
    value: int  # meaning depends on kind

    FIELDS = (
        ("event_id", "I", int),
        ("kind", "B", EventKind),
        ("slot", "B", int),
        ("uptime_ms", "I", int),
        ("token", "I", int),
        ("bank_id", f"{BANK_ID_SIZE}s", _bank_id),
        ("value", "h", int),
    )


@dataclass(frozen=True, slots=True)
class EventBatch(Message):
    boot_count: int  # the board's boot counter (low 16 bits), as in IDENTIFY
    dropped: int  # events lost to a full queue since boot, saturating at 65535
    pending: int  # unacknowledged events in the queue, including those returned here
    events: tuple[BoardEvent, ...]

    FIELDS = (("boot_count", "H", int), ("dropped", "H", int), ("pending", "B", int))
    ITEMS = ("events", BoardEvent)


@dataclass(frozen=True, slots=True)
class EventAck(Message):
    up_to: int  # acknowledge every event with an id up to and including this one
    boot_count: int  # the boot the events were read in; another boot rejects the ACK

    FIELDS = (("up_to", "I", int), ("boot_count", "H", int))


@dataclass(frozen=True, slots=True)
class AckAndRead(Message):
    """Request of ACK_AND_READ_EVENTS: an acknowledgement as in ACK_EVENTS, then a read."""

    up_to: int  # 0 acknowledges nothing
    boot_count: int  # a boot other than the board's current one skips the acknowledgement
    max_events: int

    FIELDS = (("up_to", "I", int), ("boot_count", "H", int), ("max_events", "B", int))


@dataclass(frozen=True, slots=True)
class EventAckResult(Message):
    pending: int

    FIELDS = (("pending", "B", int),)


def message_fields(message: Message) -> dict[str, Any]:
    """Return the message as a plain dict, for logs and JSON output."""
    return {field.name: getattr(message, field.name) for field in fields(message)}  # type: ignore[arg-type]
