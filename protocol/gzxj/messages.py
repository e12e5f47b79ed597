"""Field layouts of GZXJ messages, as frozen dataclasses.

Each layout declares its fields once in `FIELDS`, in the order of the dataclass fields and
of the comma-separated fields on the wire, after the command word and before the CRC. A
layout may end with a `Records` field that takes every remaining field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from protocol.gzxj.codes import RentResult
from protocol.gzxj.constants import MAX_CHARGE, MAX_ID, MAX_SLOTS, RECORD_SEPARATOR
from protocol.gzxj.errors import PayloadError
from protocol.gzxj.fields import BankId, FieldCodec, Flag, Int, Records, Token

MESSAGE_ID = Int(0, MAX_ID)
SLOT = Int(1, MAX_SLOTS)
SLOT_OR_ALL = Int(0, MAX_SLOTS)
CHARGE = Int(0, MAX_CHARGE)
SMALL = Int(0, 999)


class Message:
    """Base of every field layout."""

    FIELDS: ClassVar[tuple[tuple[str, FieldCodec], ...]] = ()

    @classmethod
    def field_count(cls) -> int | None:
        """Number of wire fields, or None when a trailing Records field makes it vary."""
        if any(isinstance(codec, Records) for _, codec in cls.FIELDS):
            return None
        return len(cls.FIELDS)

    def format(self) -> list[str]:
        tokens: list[str] = []
        for name, codec in self.FIELDS:
            value = getattr(self, name)
            try:
                if isinstance(codec, Records):
                    tokens += codec.format_all(value)
                else:
                    tokens.append(codec.format(value))
            except PayloadError as exc:
                raise PayloadError(f"{type(self).__name__}.{name}: {exc}") from exc
        return tokens

    @classmethod
    def parse(cls, tokens: tuple[str, ...] | list[str]) -> Self:
        fixed = [(name, codec) for name, codec in cls.FIELDS if not isinstance(codec, Records)]
        count = cls.field_count()
        if len(tokens) < len(fixed) or (count is not None and len(tokens) != count):
            wanted = f"{count}" if count is not None else f"at least {len(fixed)}"
            raise PayloadError(f"{cls.__name__} has {wanted} fields, not {len(tokens)}")
        values: dict[str, Any] = {}
        for index, (name, codec) in enumerate(cls.FIELDS):
            try:
                if isinstance(codec, Records):
                    values[name] = codec.parse_all(list(tokens[index:]))
                else:
                    values[name] = codec.parse(tokens[index])
            except PayloadError as exc:
                raise PayloadError(f"{cls.__name__}.{name}: {exc}") from exc
        return cls(**values)


def message_fields(message: Message) -> dict[str, Any]:
    """Return the message as a dict of its fields, for logs and JSON output."""
    return {field.name: getattr(message, field.name) for field in fields(message)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """One slot of an AC report, written `slot:confirmed:bank:charge:XYZ`.

    X is 1 while charging, Y is 0 while the bank's contacts touch, Z is 1 while the lock is
    in place.
    """

    slot: int
    # NOTE: the vendor's description calls this the host-confirmed-return flag; the public driver
    # reads it as "slot filled". Drivers should not rely on either reading alone.
    confirmed: bool
    bank_id: str | None
    charge: int  # percent
    charging: bool
    in_contact: bool
    locked: bool

    def format(self) -> str:
        charging = "1" if self.charging else "0"
        contact = "0" if self.in_contact else "1"
        lock = "1" if self.locked else "0"
        status = charging + contact + lock
        parts = (
            SLOT.format(self.slot),
            Flag().format(self.confirmed),
            BankId().format(self.bank_id),
            CHARGE.format(self.charge),
            status,
        )
        return RECORD_SEPARATOR.join(parts)

    @classmethod
    def parse(cls, token: str) -> SlotRecord:
        parts = token.split(RECORD_SEPARATOR)
        if len(parts) != 5:
            raise PayloadError(f"slot record {token!r} has {len(parts)} parts, expected 5")
        status = parts[4]
        if len(status) != 3 or set(status) - {"0", "1"}:
            raise PayloadError(f"slot status {status!r} is not three 0/1 characters")
        return cls(
            slot=SLOT.parse(parts[0]),
            confirmed=Flag().parse(parts[1]),
            bank_id=BankId().parse(parts[2]),
            charge=CHARGE.parse(parts[3]),
            charging=status[0] == "1",
            in_contact=status[1] == "0",
            locked=status[2] == "1",
        )


@dataclass(frozen=True, slots=True)
class QueryRequest(Message):
    """CQ from the host."""

    message_id: int
    slot: int  # 0 for all slots; the public driver always sends 0

    FIELDS = (("message_id", MESSAGE_ID), ("slot", SLOT_OR_ALL))


@dataclass(frozen=True, slots=True)
class SlotReport(Message):
    """AC from the station: the reply to CQ and the report sent every 3 minutes."""

    message_id: int
    device_id: str
    firmware: str
    slot_count: int
    # NOTE: three numbers the public driver passes on without knowing their meaning.
    status_1: int
    status_2: int
    status_3: int
    slots: tuple[SlotRecord, ...]

    FIELDS = (
        ("message_id", MESSAGE_ID),
        ("device_id", Token()),
        ("firmware", Token()),
        ("slot_count", Int(0, MAX_SLOTS)),
        ("status_1", SMALL),
        ("status_2", SMALL),
        ("status_3", SMALL),
        ("slots", Records(SlotRecord, MAX_SLOTS)),
    )


@dataclass(frozen=True, slots=True)
class RentRequest(Message):
    """BW from the host: the station picks the fullest bank above its threshold."""

    message_id: int
    order_id: int  # a repeated order id gets the station's cached earlier reply

    FIELDS = (("message_id", MESSAGE_ID), ("order_id", MESSAGE_ID))


@dataclass(frozen=True, slots=True)
class RentSlotRequest(Message):
    """FB from the host: rent the bank in one slot."""

    message_id: int
    order_id: int
    slot: int

    FIELDS = (("message_id", MESSAGE_ID), ("order_id", MESSAGE_ID), ("slot", SLOT))


@dataclass(frozen=True, slots=True)
class RentReply(Message):
    """BW or FB from the station: the result of a rent."""

    message_id: int
    order_id: int
    result: RentResult
    slot: int  # 0 when no slot was opened
    bank_id: str | None

    FIELDS = (
        ("message_id", MESSAGE_ID),
        ("order_id", MESSAGE_ID),
        ("result", Int(0, 999, RentResult)),
        ("slot", SLOT_OR_ALL),
        ("bank_id", BankId()),
    )


@dataclass(frozen=True, slots=True)
class RentConfirm(Message):
    """BR from the host: the rent result of this order arrived."""

    message_id: int
    order_id: int
    slot: int

    FIELDS = (("message_id", MESSAGE_ID), ("order_id", MESSAGE_ID), ("slot", SLOT_OR_ALL))


@dataclass(frozen=True, slots=True)
class ReturnReport(Message):
    """RS from the station: a bank was inserted."""

    message_id: int
    slot: int
    bank_id: str | None
    charge: int

    FIELDS = (
        ("message_id", MESSAGE_ID),
        ("slot", SLOT),
        ("bank_id", BankId()),
        ("charge", CHARGE),
    )


@dataclass(frozen=True, slots=True)
class ReturnConfirm(Message):
    """RS from the host: the return was recorded; the station repeats RS until it arrives."""

    message_id: int
    slot: int
    bank_id: str | None

    FIELDS = (("message_id", MESSAGE_ID), ("slot", SLOT), ("bank_id", BankId()))


@dataclass(frozen=True, slots=True)
class ForceUnlockRequest(Message):
    """FA from the host: open one slot, or every slot with 0."""

    message_id: int
    slot: int

    FIELDS = (("message_id", MESSAGE_ID), ("slot", SLOT_OR_ALL))


@dataclass(frozen=True, slots=True)
class ForceUnlockReply(Message):
    message_id: int
    slot: int
    result: RentResult

    FIELDS = (
        ("message_id", MESSAGE_ID),
        ("slot", SLOT_OR_ALL),
        ("result", Int(0, 999, RentResult)),
    )


@dataclass(frozen=True, slots=True)
class RulesRequest(Message):
    """CM from the host: which banks the station may rent out."""

    message_id: int
    min_charge: int  # percent
    lock_fault_blocks: bool  # a slot with a lock fault is not rented out
    cable_fault_blocks: bool  # a bank with a cable fault is not rented out

    FIELDS = (
        ("message_id", MESSAGE_ID),
        ("min_charge", CHARGE),
        ("lock_fault_blocks", Flag()),
        ("cable_fault_blocks", Flag()),
    )


@dataclass(frozen=True, slots=True)
class RulesReply(Message):
    message_id: int
    accepted: bool

    FIELDS = (("message_id", MESSAGE_ID), ("accepted", Flag()))
