"""GZXJ slot records as the cabinet model's slot status."""

from __future__ import annotations

from protocol.cabinet import FaultKind
from protocol.gzxj import SlotRecord
from protocol.gzxj.mapping import slot_faults
from protocol.slotbus import ChargingState, LockState, SlotFault, SlotFlag, SlotStatus
from protocol.slotbus.constants import CHARGE_UNKNOWN
from protocol.slotbus.messages import NO_BANK_ID

FAULT_BITS = {FaultKind.ID_READ_FAILED: SlotFault.ID_READ, FaultKind.TAMPER: SlotFault.TAMPER}


def bank_present(record: SlotRecord) -> bool:
    """Return whether a bank is in the slot: an id was read or the contacts touch."""
    return record.bank_id is not None or record.in_contact


def slot_status(record: SlotRecord, *, expected_open: bool) -> SlotStatus:
    """Convert an AC record; `expected_open` is set while the lock is open for a rent of ours.

    A lock that is not in place without a rent is TAMPER, also when the slot is empty,
    because a forced latch is usually found after the bank is gone.
    """
    flags = SlotFlag(0)
    if bank_present(record):
        flags |= SlotFlag.BANK_PRESENT
    if record.in_contact:
        flags |= SlotFlag.BANK_SEATED
    if record.bank_id is not None:
        flags |= SlotFlag.ID_VALID
    faults = SlotFault(0)
    for kind in slot_faults(record, unlock_pending=expected_open):
        faults |= FAULT_BITS.get(kind, SlotFault(0))
    if not record.locked and not expected_open:
        faults |= SlotFault.TAMPER
    return SlotStatus(
        slot=record.slot,
        flags=flags,
        lock=LockState.LOCKED if record.locked else LockState.OPEN,
        charging=ChargingState.CHARGING if record.charging else ChargingState.IDLE,
        charge=record.charge if record.bank_id is not None else CHARGE_UNKNOWN,
        bank_id=NO_BANK_ID,
        faults=faults,
    )
