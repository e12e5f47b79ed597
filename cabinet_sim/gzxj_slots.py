"""Slot access of a GZXJ station: slot records, renting rules and locks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cabinet_sim.slot import InjectedFault, Slot
from protocol.gzxj.codes import RentResult
from protocol.gzxj.messages import SlotRecord
from protocol.slotbus.codes import ChargingState, LockState, SlotFault, SlotFlag, UnlockCode
from protocol.slotbus.messages import NO_BANK_ID

if TYPE_CHECKING:
    from cabinet_sim.cabinet import Cabinet

CHARGING_STATES = frozenset({ChargingState.CHARGING, ChargingState.TOPPING})
LOCK_FAULTS = SlotFault.LOCK_STUCK | SlotFault.LOCK_NOT_RETURNED
CABLE_FAULTS = frozenset({InjectedFault.CHARGER})
"""Injected faults the station counts as a cable fault of the bank (CM's third field)."""


@dataclass(slots=True)
class Rules:
    """The renting rules that CM sets."""

    min_charge: int  # percent
    lock_fault_blocks: bool
    cable_fault_blocks: bool


def bank_text(bank_id: bytes) -> str | None:
    """Return the GZXJ text of a bank id: upper-case hex, or None for no readable id."""
    return None if bank_id == NO_BANK_ID else bank_id.hex().upper()


class StationSlots:
    """The slots of the cabinet as the station board drives them, numbered 1..N."""

    def __init__(self, cabinet: Cabinet, take_window_s: int) -> None:
        self.cabinet = cabinet
        self.take_window_s = take_window_s
        self._token = 0

    @property
    def count(self) -> int:
        return self.cabinet.slot_count

    def record(self, number: int, *, confirmed: bool) -> SlotRecord:
        """Return the AC record of one slot, as its sensors show it now."""
        slot = self.cabinet.slot(number)
        status = slot.status(self.cabinet.now)
        present = SlotFlag.BANK_PRESENT in status.flags
        identified = SlotFlag.ID_VALID in status.flags and status.charge <= 100
        return SlotRecord(
            slot=number,
            confirmed=confirmed and present,
            bank_id=bank_text(status.bank_id),
            charge=status.charge if identified else 0,
            charging=status.charging in CHARGING_STATES,
            in_contact=SlotFlag.BANK_SEATED in status.flags,
            locked=status.lock is LockState.LOCKED,
        )

    def rentable(self, number: int, rules: Rules) -> bool:
        """Check the station's renting rules for the bank in slot `number`."""
        slot = self.cabinet.slot(number)
        bank = slot.bank
        if bank is None or not slot.detected or not slot.id_readable:
            return False
        if slot.window is not None or slot.lock is not LockState.LOCKED or slot.overheated:
            return False
        if bank.charge_percent < rules.min_charge:
            return False
        # The station learns of a stuck lock only from an earlier failed opening, and of a
        # broken lock sensor from the sensor itself.
        lock_faulty = bool(slot.latched_faults & LOCK_FAULTS)
        lock_faulty = lock_faulty or InjectedFault.LOCK_SENSOR in slot.injected
        if rules.lock_fault_blocks and lock_faulty:
            return False
        return not (rules.cable_fault_blocks and CABLE_FAULTS & slot.injected)

    def fullest(self, candidates: list[int]) -> int | None:
        """Return the slot of the fullest bank among `candidates`; ties go to the lower slot."""
        best: int | None = None
        best_charge = -1.0
        for number in candidates:
            bank = self.cabinet.slot(number).bank
            if bank is not None and bank.charge > best_charge:
                best, best_charge = number, bank.charge
        return best

    def bank_id(self, number: int) -> str | None:
        slot = self.cabinet.slot(number)
        return bank_text(slot.visible_id)

    def open(self, number: int) -> RentResult:
        """Release the lock of slot `number` for the take window and return the rent result.

        A slot whose window is already running counts as opened. With a broken lock sensor
        the lock does open, but the station never detects the movement and reports TIMEOUT.
        """
        slot = self.cabinet.slot(number)
        if slot.window is not None:
            return RentResult.OK
        where = self.cabinet.locate(number)
        self._token += 1
        board = self.cabinet.boards[where.board]
        code = board.open_lock(where.slot, self._token, self.take_window_s)
        if code is UnlockCode.LOCK_FAULT:
            return RentResult.LOCK_ABNORMAL
        if InjectedFault.LOCK_SENSOR in slot.injected:
            return RentResult.TIMEOUT
        return RentResult.OK

    def slot(self, number: int) -> Slot:
        return self.cabinet.slot(number)
