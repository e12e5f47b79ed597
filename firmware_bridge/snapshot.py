"""Read-only picture of the cabinet returned by `Bridge.snapshot()`."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.cabinet import LinkState, SlotState


@dataclass(frozen=True, slots=True)
class BoardIdentity:
    board_id: int
    boot_count: int
    firmware: str
    hardware_revision: int
    slot_count: int
    max_charging: int
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BoardSnapshot:
    address: int
    first_slot: int  # global number of the board's slot 1
    slot_count: int
    link: LinkState
    reason: str
    identity: BoardIdentity | None  # None until the board answered IDENTIFY


@dataclass(frozen=True, slots=True)
class SlotSnapshot:
    slot: int  # global slot number
    board: int  # board address
    board_slot: int  # slot number on the board
    state: SlotState
    bank_id: str | None
    identified: bool
    charge: int | None
    voltage_mv: int | None
    current_ma: int | None
    temperature_c: float | None
    cycles: int | None
    health_pct: int | None
    faults: tuple[str, ...]  # SlotFault and BankFault names
    disabled_reason: str | None
    rentable: bool
    retire: bool


@dataclass(frozen=True, slots=True)
class StockCounts:
    rentable: int
    charging: int
    empty: int
    faulted: int


@dataclass(frozen=True, slots=True)
class CabinetSnapshot:
    port_open: bool
    boards: tuple[BoardSnapshot, ...]
    slots: tuple[SlotSnapshot, ...]
    stock: StockCounts
    at: float  # wall time
