"""Results the bridge returns to its caller: eject outcomes, self-tests and bank data."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.cabinet import EjectFailReason, EjectOutcome, EjectRejectReason


@dataclass(frozen=True, slots=True)
class BoardEventKey:
    """Unique name of one board event: board serial, its boot counter and the event id."""

    board_id: int
    boot_count: int
    event_id: int


@dataclass(frozen=True, slots=True)
class BankInfo:
    """What the bridge last read from a bank; None marks a value that could not be read."""

    bank_id: str | None  # upper-case hex, None when the id is unreadable
    charge: int | None  # percent
    voltage_mv: int | None = None
    current_ma: int | None = None  # positive into the bank
    temperature_c: float | None = None
    cycles: int | None = None
    health_pct: int | None = None  # state of health (SoH)
    capacity_mah: int | None = None
    faults: tuple[str, ...] = ()  # BankFault names


@dataclass(frozen=True, slots=True, kw_only=True)
class EjectResult:
    """The one outcome of an eject; exactly one of the reason fields is set for FAILED/REJECTED.

    `uncertain` is True only with FAILED: the UNLOCK may have reached the board but its outcome
    could not be learned. A later terminal event for the token then arrives as LateEjectOutcome.
    """

    token: int
    slot: int | None  # global slot number; None when rejected before a slot was chosen
    outcome: EjectOutcome
    fail_reason: EjectFailReason | None = None
    reject_reason: EjectRejectReason | None = None
    bank_id: str | None = None  # bank in the slot at eject (TAKEN: the bank taken)
    charge: int | None = None  # percent, at eject
    temperature_c: float | None = None  # at eject
    uncertain: bool = False
    detail: str = ""
    finished_at: float = 0.0  # wall time


@dataclass(frozen=True, slots=True)
class SelfTestReport:
    slot: int
    passed: bool
    failed_checks: tuple[str, ...]  # SelfTestCheck names
    at: float  # wall time
