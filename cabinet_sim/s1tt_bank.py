"""STATUS data of an S1TT bank, and the values the host can write into the bank."""

from __future__ import annotations

from dataclasses import dataclass

from cabinet_sim.slot import Slot
from protocol.s1tt.codes import BankState
from protocol.s1tt.constants import BANK_SERIAL_SIZE
from protocol.s1tt.messages import BankInfoRequest, BankStatus
from protocol.slotbus.codes import ChargingState

MAX_U16 = 0xFFFF
CUTOFF_PERCENT = 5
"""Cutoff charge of a bank whose capacities were never written, in percent of its total."""
MANUFACTURED_BASE = 1_700_000_000
"""Unix time of the oldest simulated bank; each bank's time is derived from its id."""
MANUFACTURED_SPAN_S = 60_000_000


@dataclass(slots=True)
class BankRecord:
    """Values the host wrote into a bank's memory; None where it never wrote one."""

    serial: str | None = None
    manufactured_at: int | None = None
    cutoff_charge_mah: int | None = None


def default_serial(bank_id: bytes) -> str:
    """Return the 10-character serial of a bank: the last 5 bytes of its id in hex."""
    return bank_id[-(BANK_SERIAL_SIZE // 2) :].hex().upper()


class BankMemory:
    """Per-bank memory, keyed by the bank id, so that it follows the bank between slots."""

    def __init__(self) -> None:
        self.records: dict[bytes, BankRecord] = {}

    def record(self, bank_id: bytes) -> BankRecord:
        return self.records.setdefault(bank_id, BankRecord())

    def write_identity(self, slot: Slot, request: BankInfoRequest) -> None:
        bank = slot.bank
        if bank is None:
            return
        record = self.record(bank.bank_id)
        record.serial = request.serial
        record.manufactured_at = request.manufactured_at
        bank.cycles = request.cycles

    def write_capacities(self, slot: Slot, total: int, current: int, cutoff: int) -> None:
        """Take the written capacities as the bank's new total and charge."""
        bank = slot.bank
        if bank is None:
            return
        self.record(bank.bank_id).cutoff_charge_mah = cutoff
        bank.capacity_mah = total
        bank.charge = max(0.0, (current - cutoff) / (total - cutoff) * 100)


def bank_state(slot: Slot) -> BankState:
    bank = slot.bank
    if slot.overheated or (bank is not None and bank.charge <= 0):
        return BankState.CUTOFF  # the pack protection tripped
    if slot.charging in (ChargingState.CHARGING, ChargingState.TOPPING):
        return BankState.CHARGING
    if slot.charging is ChargingState.FULL:
        return BankState.IDLE
    return BankState.PLUGGED_IN


def bank_status(slot: Slot, memory: BankMemory) -> BankStatus:
    """Return the STATUS reply of the bank in `slot`; the slot must hold a readable bank.

    The current charge is set so that (current - cutoff) / (total - cutoff) is the bank's
    charge, which is how the public driver computes a percentage.
    """
    bank = slot.bank
    if bank is None:
        raise ValueError(f"slot {slot.number} contains no bank")
    record = memory.records.get(bank.bank_id, BankRecord())
    total = min(bank.capacity_mah, MAX_U16)
    cutoff = record.cutoff_charge_mah
    if cutoff is None:
        cutoff = total * CUTOFF_PERCENT // 100
    current = cutoff + round((total - cutoff) * bank.charge / 100)
    manufactured_at = record.manufactured_at
    if manufactured_at is None:
        manufactured_at = MANUFACTURED_BASE + int.from_bytes(bank.bank_id) % MANUFACTURED_SPAN_S
    return BankStatus(
        serial=record.serial if record.serial is not None else default_serial(bank.bank_id),
        manufactured_at=manufactured_at,
        total_charge_mah=total,
        current_charge_mah=current,
        cutoff_charge_mah=cutoff,
        cycles=min(bank.cycles, MAX_U16),
        state=bank_state(slot),
        average_capacity_mah=min(round(bank.capacity_mah * bank.health / 100), MAX_U16),
    )
