"""Typed events the bridge hands to its sink, each stamped with wall time `at`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from firmware_bridge.results import BankInfo, BoardEventKey, EjectResult
from protocol.cabinet import FaultKind, LinkState, SlotState


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotStateChanged:
    slot: int  # global slot number; 0 is the cabinet
    previous: SlotState
    state: SlotState
    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BankReturned:
    """A bank was inserted; exactly one per physical insert, also when the id is unreadable.

    `key` names the BANK_INSERTED board event; it is None when the return was found by
    rebuilding the picture after lost events or a board reboot (`reconciled` is then True).
    """

    slot: int
    bank_id: str | None
    identified: bool
    seated: bool
    bank: BankInfo | None  # None until the bank data could be read
    key: BoardEventKey | None
    reconciled: bool
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BankRemoved:
    """A bank left its slot outside any take window (or the rebuilt picture lost it)."""

    slot: int
    bank_id: str | None
    key: BoardEventKey | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EjectFinished:
    result: EjectResult
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LateEjectOutcome:
    """A terminal board event for an eject that already finished as FAILED(uncertain)."""

    result: EjectResult  # outcome as the board reported it
    key: BoardEventKey
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRaised:
    kind: FaultKind
    slot: int  # 0 for board- or cabinet-wide faults
    board: int | None  # board address, None for the serial port
    detail: str
    key: BoardEventKey | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardLinkChanged:
    board: int  # address
    previous: LinkState
    state: LinkState
    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BankHealthReport:
    bank_id: str
    slot: int
    health_pct: int
    health_trend: tuple[int, ...]  # recent distinct SoH readings, oldest first
    cycles: int
    retire: bool  # SoH below the configured threshold
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StockChanged:
    rentable: int
    charging: int  # a bank is present but not rentable yet (low charge, hot, reading)
    empty: int
    faulted: int  # faulted, disabled or unknown slots
    at: float


CabinetEvent = (
    SlotStateChanged
    | BankReturned
    | BankRemoved
    | EjectFinished
    | LateEjectOutcome
    | FaultRaised
    | BoardLinkChanged
    | BankHealthReport
    | StockChanged
)


class EventSink(Protocol):
    """Receiver of bridge events; board events are acknowledged only after `handle` returns."""

    async def handle(self, event: CabinetEvent) -> None: ...
