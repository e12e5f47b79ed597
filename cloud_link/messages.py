"""Messages the cabinet publishes, as pydantic models.

Every payload is an `Envelope`: the header fields shared by all messages and a `data`
object whose `kind` field names the message. The JSON Schemas and the AsyncAPI document
in `docs/` are generated from these classes.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import to_json

from protocol.cabinet import (
    EjectFailReason,
    EjectOutcome,
    EjectRejectReason,
    FaultKind,
    LinkState,
    SlotState,
)

SCHEMA_VERSION = 1


def _format_timestamp(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""UTC time with milliseconds on the wire, for example `2027-01-15T08:30:12.345Z`."""

SlotNumber = Annotated[int, Field(ge=1, le=255, description="Slot number, 1-based.")]
BankId = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{2,32}$", description="Bank serial in hex.")]
Percent = Annotated[int, Field(ge=0, le=100)]
CommandId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Lane(IntEnum):
    """Outbox lanes, drained in this order."""

    URGENT = 0  # command results, security events, birth
    TRANSACTIONAL = 1  # events a backend bills or acts on, delivered in order
    TELEMETRY = 2  # state, battery health, heartbeat: may be coalesced or dropped


class BoardSnapshot(_Frozen):
    address: int = Field(ge=0, le=255)
    online: bool
    firmware: str | None = None
    first_slot: SlotNumber
    slot_count: int = Field(ge=1, le=64)


class SlotSnapshot(_Frozen):
    slot: SlotNumber
    state: SlotState
    bank_id: BankId | None = None
    soc_percent: Percent | None = None
    disabled: bool = False
    fault: FaultKind | None = None


class Birth(_Frozen):
    """Full cabinet state, published after every connect and on a rebirth command."""

    kind: Literal["birth"] = "birth"
    gateway_version: str
    slot_count: int = Field(ge=0, le=255)
    rentable_count: int = Field(ge=0, le=255)
    charging_count: int = Field(ge=0, le=255)
    empty_count: int = Field(ge=0, le=255)
    faulted_count: int = Field(ge=0, le=255)
    min_rentable_soc_percent: Percent
    clock_synchronised: bool
    boards: tuple[BoardSnapshot, ...] = ()
    slots: tuple[SlotSnapshot, ...] = ()


class StateChange(_Frozen):
    """A slot changed state; slot 0 is the cabinet itself."""

    kind: Literal["state_change"] = "state_change"
    slot: int = Field(ge=0, le=255)
    state: SlotState
    previous: SlotState | None = None
    bank_id: BankId | None = None
    soc_percent: Percent | None = None


class EjectReport(_Frozen):
    """The final outcome of one eject request."""

    outcome: EjectOutcome
    slot: SlotNumber | None = None
    bank_id: BankId | None = None
    fail_reason: EjectFailReason | None = None
    reject_reason: EjectRejectReason | None = None
    soc_percent: Percent | None = None
    temperature_c: float | None = Field(default=None, ge=-60.0, le=150.0)
    uncertain: bool = Field(
        default=False, description="True when the lock may have opened although no take was seen."
    )
    late: bool = Field(
        default=False, description="True when the outcome was learned after the first report."
    )


class EjectOutcomeEvent(_Frozen):
    kind: Literal["eject_outcome"] = "eject_outcome"
    command_id: CommandId | None = None
    order_id: str | None = Field(default=None, max_length=64)
    report: EjectReport


class ReturnEvent(_Frozen):
    """A bank was inserted; `recognised` is false when its id could not be read."""

    kind: Literal["bank_returned"] = "bank_returned"
    slot: SlotNumber
    bank_id: BankId | None = None
    recognised: bool
    soc_percent: Percent | None = None
    problem: str | None = Field(default=None, max_length=200)


class FaultEvent(_Frozen):
    kind: Literal["fault"] = "fault"
    fault: FaultKind
    slot: SlotNumber | None = None
    board: int | None = Field(default=None, ge=0, le=255)
    cleared: bool = False
    detail: str | None = Field(default=None, max_length=200)


class SecurityEventKind(StrEnum):
    MISSING_SIGNATURE = "missing_signature"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_CABINET = "wrong_cabinet"
    TAMPER = "tamper"
    MAINTENANCE_EJECT = "maintenance_eject"  # a technician ejected a bank on site
    INVALID_DEADLINE = "invalid_deadline"  # expired, too far ahead, or issued in the future
    MALFORMED_COMMAND = "malformed_command"  # oversized, not UTF-8 or JSON, too deep, bad schema


class SecurityEvent(_Frozen):
    kind: Literal["security"] = "security"
    event: SecurityEventKind
    command_id: str | None = Field(default=None, max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    slot: SlotNumber | None = None
    detail: str | None = Field(default=None, max_length=200)


class LowStockEvent(_Frozen):
    """Rentable banks or free slots (for returns) fell below their threshold."""

    kind: Literal["low_stock"] = "low_stock"
    reason: Literal["rentable", "free_slots"] = "rentable"
    rentable_count: int = Field(ge=0, le=255)
    free_slots: int | None = Field(default=None, ge=0, le=255)
    threshold: int = Field(ge=0, le=255)


class StockReport(_Frozen):
    """Slot counts by state; a newer report replaces an unsent older one."""

    kind: Literal["stock"] = "stock"
    rentable: int = Field(ge=0, le=255)
    charging: int = Field(ge=0, le=255)
    empty: int = Field(ge=0, le=255)
    faulted: int = Field(ge=0, le=255)


class BatteryHealth(_Frozen):
    kind: Literal["battery_health"] = "battery_health"
    slot: SlotNumber
    bank_id: BankId
    soc_percent: Percent | None = None
    voltage_mv: int | None = Field(default=None, ge=0, le=30_000)
    current_ma: int | None = Field(default=None, ge=-20_000, le=20_000)
    temperature_c: float | None = Field(default=None, ge=-60.0, le=150.0)
    cycle_count: int | None = Field(default=None, ge=0)
    soh_percent: Percent | None = None
    retire: bool = Field(default=False, description="True when the bank should be retired.")


class OutboxStats(_Frozen):
    pending: int = Field(ge=0)
    pending_bytes: int = Field(ge=0)
    telemetry_dropped: int = Field(ge=0)
    telemetry_coalesced: int = Field(ge=0)
    dead_letters: int = Field(ge=0)


class Heartbeat(_Frozen):
    kind: Literal["heartbeat"] = "heartbeat"
    uptime_s: int = Field(ge=0)
    link: LinkState
    clock_synchronised: bool
    interval_s: int = Field(ge=1, description="Seconds until the next heartbeat.")
    outbox: OutboxStats


class CommandStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class CommandRejectReason(StrEnum):
    """Reason a command was rejected or failed."""

    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    INVALID_ENVELOPE = "invalid_envelope"
    MISSING_SIGNATURE = "missing_signature"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    INVALID_SCHEMA = "invalid_schema"
    UNKNOWN_COMMAND = "unknown_command"
    WRONG_CABINET = "wrong_cabinet"
    EXPIRED = "expired"
    DEADLINE_TOO_FAR = "deadline_too_far"
    ISSUED_IN_FUTURE = "issued_in_future"
    NO_TRUSTED_DEADLINE = "no_trusted_deadline"
    EXECUTION_ERROR = "execution_error"  # the handler raised; nothing is known to have acted
    NOT_SUPPORTED = "not_supported"


class CommandResult(_Frozen):
    """The one final result of a command, or the rejection of an invalid request."""

    kind: Literal["command_result"] = "command_result"
    command_id: str | None = Field(
        default=None, max_length=64, description="Null when the request had no readable id."
    )
    command: str | None = Field(default=None, max_length=32)
    status: CommandStatus
    reject_reason: CommandRejectReason | None = None
    detail: str | None = Field(default=None, max_length=300)
    eject: EjectReport | None = None


AnyMessageData = (
    Birth
    | StateChange
    | EjectOutcomeEvent
    | ReturnEvent
    | FaultEvent
    | SecurityEvent
    | LowStockEvent
    | StockReport
    | BatteryHealth
    | Heartbeat
    | CommandResult
)
MessageData = Annotated[AnyMessageData, Field(discriminator="kind")]

DataT = TypeVar("DataT")


class Envelope(_Frozen, Generic[DataT]):
    """Header shared by every published message, around one `data` object."""

    cabinet_id: str
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    seq: int = Field(ge=1, description="Per-cabinet sequence number; never repeats.")
    ts: Timestamp = Field(description="Wall-clock time the message was created (UTC).")
    offline: bool = Field(
        default=False, description="True when the message was queued while disconnected."
    )
    data: DataT


AnyEnvelope = Envelope[MessageData]

MESSAGE_DATA_TYPES: tuple[type[BaseModel], ...] = (
    Birth,
    StateChange,
    EjectOutcomeEvent,
    ReturnEvent,
    FaultEvent,
    SecurityEvent,
    LowStockEvent,
    StockReport,
    BatteryHealth,
    Heartbeat,
    CommandResult,
)


_YEAR_10000_S = 253_402_300_800  # 10000-01-01T00:00:00Z, beyond what `datetime` represents


class EnvelopeEncoder:
    """Encoder of one cabinet's envelopes, byte for byte as `AnyEnvelope.model_dump_json`.

    The outbox encodes one envelope per append. Building and validating an `Envelope` for it
    cost about seven times the CPU of this encoder (timeit on the 2-core development VM),
    although the data object was validated when it was created and the outbox makes the
    header fields itself. `tests/cloud_link/test_envelope_encoder.py` compares the output
    with the model's.
    """

    def __init__(self, cabinet_id: str) -> None:
        self._head = b"".join(
            (
                b'{"cabinet_id":',
                to_json(cabinet_id),
                b',"schema_version":',
                str(SCHEMA_VERSION).encode(),
                b',"seq":',
            )
        )
        # The last whole second formatted, reused while appends fall in the same second.
        self._second = -1
        self._second_text = ""

    def encode(self, *, seq: int, wall_s: float, offline: bool, data: AnyMessageData) -> bytes:
        """Return the JSON of the envelope. `wall_s` is the wall-clock time in seconds."""
        if seq < 1:
            raise ValueError(f"invalid sequence number {seq}: it must be 1 or more")
        if not isinstance(data, MESSAGE_DATA_TYPES):
            raise TypeError(f"{type(data).__name__} is not a message data type")
        return b"".join(
            (
                self._head,
                str(seq).encode(),
                b',"ts":"',
                self._timestamp(wall_s).encode(),
                b'","offline":',
                b"true" if offline else b"false",
                b',"data":',
                data.__pydantic_serializer__.to_json(data),
                b"}",
            )
        )

    def _timestamp(self, wall_s: float) -> str:
        """Format `wall_s` as `Timestamp` does for `datetime.fromtimestamp(wall_s, UTC)`."""
        if not 0 <= wall_s < _YEAR_10000_S:
            return _format_timestamp(datetime.fromtimestamp(wall_s, tz=UTC))
        # datetime rounds the fraction to microseconds, half to even, and the wire format
        # then truncates it to milliseconds.
        fraction, whole = math.modf(wall_s)
        micros = round(fraction * 1_000_000)
        second = int(whole)
        if micros >= 1_000_000:
            micros -= 1_000_000
            second += 1
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{micros // 1000:03d}Z"


class LinkStatus(_Frozen):
    """Retained payload of the status topic; the `offline` value is also the MQTT will.

    Not sequenced and not stored in the outbox: only the newest value matters.
    """

    cabinet_id: str
    state: Literal["online", "offline"]
    ts: Timestamp = Field(description="When the gateway composed this status (UTC).")
    reason: Literal["shutdown", "connection_lost"] | None = None


EVENT_KINDS: tuple[str, ...] = ("eject_outcome", "bank_returned", "fault", "security", "low_stock")


def lane_of(data: BaseModel) -> Lane:
    """Return the outbox lane a message kind belongs to."""
    kind = getattr(data, "kind", None)
    if kind in ("command_result", "security", "birth"):
        return Lane.URGENT
    if kind in ("eject_outcome", "bank_returned", "fault", "low_stock"):
        return Lane.TRANSACTIONAL
    return Lane.TELEMETRY


def coalesce_key_of(data: BaseModel) -> str | None:
    """Return the key under which a newer telemetry message replaces an older pending one."""
    if isinstance(data, StateChange):
        return f"state:{data.slot}"
    if isinstance(data, BatteryHealth):
        return f"battery:{data.slot}"
    if isinstance(data, (Heartbeat, Birth, StockReport)):
        return data.kind
    return None


def parse_message(payload: bytes | str) -> AnyEnvelope:
    """Parse a published payload (for backends and tests)."""
    return AnyEnvelope.model_validate_json(payload)


def encode_message(envelope: Envelope[DataT]) -> bytes:
    return envelope.model_dump_json(exclude_none=False).encode()


def timestamp(dt: datetime) -> datetime:
    """Return `dt` rounded to milliseconds, the resolution of `ts` on the wire."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)
