"""The contract between the control socket and the daemon: `DaemonApi` and its reply models.

The control server (`gateway.control`) calls a `DaemonApi` and sends the replies as JSON, and
the diagnostics CLI reads them back into the same models. Every reply carries `schema`
(`SCHEMA_VERSION`). A change that removes or renames a field, or changes its meaning, bumps the
version. Added optional fields do not, because reply models ignore fields they do not know, so an
older CLI keeps working against a newer daemon.

Times named `*_at` are wall-clock UNIX timestamps in seconds. Durations end in `_s`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from protocol.cabinet import (
    EjectFailReason,
    EjectOutcome,
    EjectRejectReason,
    LinkState,
    SlotState,
)

SCHEMA_VERSION = 1

SlotNumber = Annotated[int, Field(ge=1, le=255)]
Percent = Annotated[int, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0)]


class ApiErrorCode(StrEnum):
    """Error codes sent in `{"error": {"code": ...}}`. The CLI shows a translated text per code."""

    INVALID_REQUEST = "invalid_request"  # not JSON, not an object, or too large
    UNKNOWN_METHOD = "unknown_method"
    INVALID_PARAMS = "invalid_params"
    UNKNOWN_SLOT = "unknown_slot"
    SLOT_EMPTY = "slot_empty"
    SLOT_BUSY = "slot_busy"  # an eject or self-test is running on the slot
    BOARD_OFFLINE = "board_offline"
    NOT_FOUND = "not_found"  # no such order
    UNAVAILABLE = "unavailable"  # the daemon is starting or stopping
    INTERNAL = "internal"


class ApiError(Exception):
    """An error the daemon reports to the client, with a code from `ApiErrorCode`.

    `message` is English detail for logs and `--json` output. The CLI shows its own translated
    text for the code and adds `message` as detail.
    """

    def __init__(self, code: ApiErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class _Reply(BaseModel):
    # JSON uses the alias `schema`, and populate_by_name lets Python code write `schema_version=`.
    model_config = ConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, serialize_by_alias=True
    )


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- status -------------------------------------------------------------------------------


class MqttLinkStatus(_Reply):
    state: LinkState
    broker: str  # URL without credentials, for example mqtts://broker.example:8883
    connected_since: float | None = None
    last_error: str | None = None


class SerialLinkStatus(_Reply):
    state: LinkState
    port: str  # device path, for example /dev/ttyS1
    port_open: bool
    last_error: str | None = None


class BoardStatus(_Reply):
    address: int = Field(ge=0, le=255)
    # Board serial as 16 hex digits: JSON numbers above 2**53 lose precision in JavaScript.
    board_id: str | None = None
    firmware: str | None = None
    first_slot: SlotNumber
    slot_count: int = Field(ge=1, le=64)
    link: LinkState
    reason: str = ""  # why the board is degraded or offline (empty when online)


class OutboxLaneStatus(_Reply):
    lane: Literal["urgent", "transactional", "telemetry"]
    depth: Count  # messages waiting
    bytes: Count
    oldest_age_s: float | None = None  # None when the lane is empty


class OutboxSummary(_Reply):
    lanes: list[OutboxLaneStatus]
    dead_letters: Count
    dropped_telemetry: Count


class StockCounts(_Reply):
    rentable: Count
    charging: Count
    empty: Count
    faulted: Count
    disabled: Count


class ErrorRecord(_Reply):
    at: float
    source: str  # "serial", "mqtt", "board 3", "slot 12", ...
    message: str


class StatusReply(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    cabinet_id: str
    version: str  # gateway software version
    uptime_s: float = Field(ge=0)
    mqtt: MqttLinkStatus
    serial: SerialLinkStatus
    boards: list[BoardStatus]
    outbox: OutboxSummary
    stock: StockCounts
    last_errors: list[ErrorRecord] = []  # newest first


# --- slots and banks ----------------------------------------------------------------------


class SlotInfo(_Reply):
    slot: SlotNumber
    board: int = Field(ge=0, le=255)  # board address
    state: SlotState
    bank_id: str | None = None  # upper-case hex, None when the slot is empty or the id unreadable
    charge_pct: Percent | None = None  # state of charge (SoC), None when unreadable
    temperature_c: float | None = None
    voltage_mv: int | None = None
    health_pct: Percent | None = None  # state of health (SoH)
    cycles: Count | None = None
    faults: list[str] = []  # SlotFault and BankFault names, for example "LOCK_STUCK"
    disabled_reason: str | None = None
    rentable: bool = False
    retire: bool = False  # the bank should be taken out of service (low SoH)


class SlotsReply(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    slots: list[SlotInfo]


class HealthSample(_Reply):
    at: float
    health_pct: Percent
    cycles: Count | None = None


class BankReply(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    slot: SlotNumber
    state: SlotState
    bank_id: str | None = None
    charge_pct: Percent | None = None
    voltage_mv: int | None = None
    current_ma: int | None = None  # positive into the bank
    temperature_c: float | None = None
    cycles: Count | None = None
    health_pct: Percent | None = None
    capacity_mah: Count | None = None
    faults: list[str] = []
    retire: bool = False
    read_at: float | None = None  # when these values were read from the bank
    health_history: list[HealthSample] = []  # oldest first


# --- bus and outbox -----------------------------------------------------------------------


class BoardBusInfo(_Reply):
    address: int = Field(ge=0, le=255)
    requests: Count
    replies: Count
    timeouts: Count
    retries: Count
    errors: Count  # replies with a non-OK status
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None


class BusReply(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    port: str
    port_open: bool
    frames_sent: Count
    frames_received: Count
    bytes_sent: Count
    bytes_received: Count
    bytes_dropped: Count  # garbage and partial frames the deframer discarded
    crc_errors: Count
    timeouts: Count
    retries: Count
    echoes: Count  # own frames read back from a half-duplex adapter
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    reopens: Count
    boards: list[BoardBusInfo]


class DeadLetterInfo(_Reply):
    seq: Count
    topic: str
    size: Count  # bytes
    reason: str
    reason_code: int | None = None  # MQTT reason code from the broker, when there was one
    failed_at: float


class OutboxReply(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    lanes: list[OutboxLaneStatus]
    dropped_telemetry: Count
    dead_letter_count: Count
    dead_letters: list[DeadLetterInfo]  # newest first, at most 100


# --- events -------------------------------------------------------------------------------


class EventRecord(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    seq: Count  # increases by one per event while the daemon runs
    at: float
    kind: str  # for example "eject_outcome", "bank_returned", "fault", "board_link"
    slot: SlotNumber | None = None
    summary: str  # one English line
    data: dict[str, JsonValue] = {}


# --- actions ------------------------------------------------------------------------------


class SelfTestResult(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    slot: SlotNumber
    passed: bool
    failed_checks: list[str] = []  # SelfTestCheck names, for example "LOCK_SENSOR"
    at: float


class MaintenanceEjectReply(_Reply):
    """Outcome of a maintenance eject. Exactly one reason is set for FAILED or REJECTED."""

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    slot: SlotNumber
    outcome: EjectOutcome
    fail_reason: EjectFailReason | None = None
    reject_reason: EjectRejectReason | None = None
    bank_id: str | None = None
    audit_seq: Count | None = None  # outbox sequence number of the security event sent
    detail: str = ""


class BankReading(_Reply):
    """Bank data read at one moment of an order."""

    at: float
    bank_id: str | None = None
    charge_pct: Percent | None = None
    temperature_c: float | None = None
    voltage_mv: int | None = None
    health_pct: Percent | None = None
    cycles: Count | None = None


class OrderStep(_Reply):
    """One timed step of an order: command received, unlock sent, result queued, and so on."""

    at: float
    step: str  # for example "received", "unlock_sent", "taken", "result_queued", "result_acked"
    detail: str = ""


class OrderEvidence(_Reply):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    order_id: str
    kind: Literal["rent", "return"]
    slot: SlotNumber | None = None
    bank_id: str | None = None
    outcome: EjectOutcome | None = None  # rents only, None while the eject is running
    fail_reason: EjectFailReason | None = None
    reject_reason: EjectRejectReason | None = None
    identified: bool | None = None  # returns only: whether the bank id was read
    bank_at_eject: BankReading | None = None
    bank_at_return: BankReading | None = None
    steps: list[OrderStep] = []  # oldest first


class SupportBundle(_Reply):
    """Support data for the bundle archive.

    The daemon passes its config through `redact_secrets` before building this reply, and the
    CLI redacts it once more before writing the archive.
    """

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    created_at: float
    cabinet_id: str
    version: str
    config: dict[str, JsonValue]
    status: StatusReply
    recent_events: list[EventRecord] = []
    log_lines: list[str] = []


# --- request parameters -------------------------------------------------------------------


class NoParams(_Params):
    pass


class SlotParams(_Params):
    slot: SlotNumber


class EventsParams(_Params):
    follow: bool = False
    limit: int = Field(default=50, ge=0, le=10_000)  # past events sent before following


class SlotDisableParams(_Params):
    slot: SlotNumber
    reason: str = Field(min_length=1, max_length=200)


class MaintenanceEjectParams(_Params):
    slot: SlotNumber
    reason: str = Field(min_length=1, max_length=200)
    technician: str = Field(min_length=1, max_length=64)


class OrderParams(_Params):
    order_id: str = Field(min_length=1, max_length=64)


# --- the protocol the daemon implements ----------------------------------------------------


class DaemonApi(Protocol):
    """Operations the daemon offers through the control socket.

    Methods raise `ApiError` for an expected failure (unknown slot, slot busy, order not found).
    Any other exception is logged by the server and sent as `internal`.
    """

    async def status(self) -> StatusReply: ...

    async def slots(self) -> SlotsReply: ...

    async def bank(self, slot: int) -> BankReply: ...

    async def bus(self) -> BusReply: ...

    async def outbox(self) -> OutboxReply: ...

    def events(self, follow: bool, limit: int) -> AsyncGenerator[EventRecord, None]:
        """Yield up to `limit` past events, oldest first, then new events while `follow` is set.

        Implement as an async generator. The server closes it when the client disconnects.
        """
        ...

    async def selftest(self, slot: int) -> SelfTestResult: ...

    async def slot_disable(self, slot: int, reason: str) -> SlotInfo:
        """Disable the slot so that it is never rented. The setting survives a restart."""
        ...

    async def slot_enable(self, slot: int) -> SlotInfo: ...

    async def maintenance_eject(
        self, slot: int, reason: str, technician: str
    ) -> MaintenanceEjectReply:
        """Eject the bank in `slot` for maintenance and send a security event to the cloud."""
        ...

    async def order(self, order_id: str) -> OrderEvidence: ...

    async def bundle(self) -> SupportBundle: ...


# --- secrets ------------------------------------------------------------------------------

REDACTED = "<redacted>"

# A config key containing one of these words names a secret or the path to one.
SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "key", "credential", "psk")

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", re.IGNORECASE)
_ASSIGNED_SECRET = re.compile(
    r"(?P<head>\b(?:password|passwd|secret|token|psk)\s*[=:]\s*)[^\s,;]+", re.IGNORECASE
)
_PEM_BLOCK = re.compile(r"-----BEGIN [^-]+-----.*?(?:-----END [^-]+-----|\Z)", re.DOTALL)


def redact_secrets(config: Mapping[str, Any]) -> dict[str, JsonValue]:
    """Return a copy of `config` with secret values replaced by `REDACTED`.

    A value is secret when its key contains a word of `SECRET_KEY_WORDS` (case-insensitive),
    or when it is a string containing a PEM block or naming a `.key` file. Passwords inside
    URLs are replaced and the rest of the URL is kept. Nested tables and lists are walked.
    """
    return {str(key): _redact_value(str(key), value) for key, value in config.items()}


def redact_text(text: str) -> str:
    """Replace PEM blocks, URL passwords and `password=...` style values in free text."""
    text = _PEM_BLOCK.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda match: f"{match['head']}{REDACTED}@", text)
    return _ASSIGNED_SECRET.sub(lambda match: f"{match['head']}{REDACTED}", text)


def _redact_value(key: str, value: Any) -> JsonValue:
    lowered = key.lower()
    if value is not None and any(word in lowered for word in SECRET_KEY_WORDS):
        return REDACTED
    if isinstance(value, Mapping):
        return redact_secrets(value)
    if isinstance(value, list | tuple):
        return [_redact_value(key, item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if "-----BEGIN" in text or text.strip().lower().endswith(".key"):
        return REDACTED
    return redact_text(text)
