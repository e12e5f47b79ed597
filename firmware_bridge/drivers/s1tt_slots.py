"""S1TT slot bits and bank status as the cabinet model's slot status and bank data."""

from __future__ import annotations

from firmware_bridge.results import BankInfo
from protocol.s1tt import BankState, BankStatus, SlotBits
from protocol.slotbus import ChargingState, LockState, SlotFault, SlotFlag, SlotStatus
from protocol.slotbus.constants import CHARGE_UNKNOWN
from protocol.slotbus.messages import NO_BANK_ID

CHARGING = {BankState.CHARGING: ChargingState.CHARGING, BankState.CUTOFF: ChargingState.CUTOFF}


def charge_percent(status: BankStatus) -> int:
    """Return the charge as the public driver computes it: above cutoff, of total above cutoff."""
    usable = status.total_charge_mah - status.cutoff_charge_mah
    if usable <= 0:
        return 0
    percent = round(100 * (status.current_charge_mah - status.cutoff_charge_mah) / usable)
    return max(0, min(100, percent))


def bank_info(status: BankStatus) -> BankInfo:
    return BankInfo(
        bank_id=status.serial or None,
        charge=charge_percent(status),
        cycles=status.cycles,
        capacity_mah=status.average_capacity_mah or status.total_charge_mah,
    )


def slot_status(
    bits: SlotBits, bank: BankStatus | None, *, unreadable: bool, expected_open: bool
) -> SlotStatus:
    """Convert SLOTS bits and the last STATUS of the bank in the slot.

    `unreadable` marks a filled slot whose STATUS timed out, `expected_open` a lock opened
    by an eject of ours. A lock out of place without one is TAMPER, also for an empty slot.
    """
    flags = SlotFlag(0)
    faults = SlotFault(0)
    if bits.filled:
        flags |= SlotFlag.BANK_PRESENT
        if bank is not None:
            flags |= SlotFlag.BANK_SEATED | SlotFlag.ID_VALID
        elif unreadable:
            faults |= SlotFault.ID_READ
    if not bits.locked and not expected_open:
        faults |= SlotFault.TAMPER
    charging, charge = ChargingState.IDLE, CHARGE_UNKNOWN
    if bits.filled and bank is not None:
        charging = CHARGING.get(bank.state, ChargingState.IDLE)
        charge = charge_percent(bank)
    return SlotStatus(
        slot=bits.slot + 1,
        flags=flags,
        lock=LockState.LOCKED if bits.locked else LockState.OPEN,
        charging=charging,
        charge=charge,
        bank_id=NO_BANK_ID,
        faults=faults,
    )
