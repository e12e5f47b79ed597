"""Map GZXJ rent results and slot records onto the cabinet vocabulary.

A rent result OK means that the station opened a slot, not that the user took the bank.
The driver decides TAKEN or NOT_TAKEN by comparing AC reports once the sensors have
settled, so the mapping leaves the outcome of OK open.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.cabinet import (
    EjectFailReason,
    EjectOutcome,
    EjectRejectReason,
    FaultKind,
    SlotState,
)
from protocol.gzxj.codes import RentResult
from protocol.gzxj.messages import SlotRecord


@dataclass(frozen=True, slots=True)
class EjectResult:
    """Meaning of one rent or force-unlock result for the eject that requested it."""

    outcome: EjectOutcome | None  # None: the slot opened, the take is not known yet
    fail_reason: EjectFailReason | None = None
    reject_reason: EjectRejectReason | None = None
    fault: FaultKind | None = None


RENT_RESULTS: dict[RentResult, EjectResult] = {
    RentResult.OK: EjectResult(None),
    RentResult.NO_BANK: EjectResult(
        EjectOutcome.REJECTED, reject_reason=EjectRejectReason.NO_RENTABLE_BANK
    ),
    RentResult.TIMEOUT: EjectResult(EjectOutcome.FAILED, fail_reason=EjectFailReason.TIMEOUT),
    RentResult.LOCK_ABNORMAL: EjectResult(
        EjectOutcome.FAILED, fail_reason=EjectFailReason.LOCK_FAULT, fault=FaultKind.LOCK_FAULT
    ),
}

UNDEFINED_RESULT = EjectResult(EjectOutcome.FAILED, fail_reason=EjectFailReason.BOARD_ERROR)


def rent_result(code: int) -> EjectResult:
    """Return the meaning of a rent result code; an undefined code is a board error."""
    try:
        return RENT_RESULTS[RentResult(code)]
    except ValueError:
        return UNDEFINED_RESULT


def slot_state(record: SlotRecord, *, unlock_pending: bool = False) -> SlotState:
    """Return the cabinet state of one AC slot record.

    `unlock_pending` is set by the driver while a take window of its own rent is running.
    """
    if record.bank_id is None:
        # Contacts touching without an id: a bank that cannot be read.
        return SlotState.FAULTED if record.in_contact else SlotState.EMPTY
    if not record.locked:
        return SlotState.AWAITING_TAKE if unlock_pending else SlotState.FAULTED
    return SlotState.CHARGING if record.charging else SlotState.READY


def slot_faults(record: SlotRecord, *, unlock_pending: bool = False) -> frozenset[FaultKind]:
    """Return the faults that one AC slot record shows."""
    faults: set[FaultKind] = set()
    if record.bank_id is None and record.in_contact:
        faults.add(FaultKind.ID_READ_FAILED)
    if record.bank_id is not None and not record.locked and not unlock_pending:
        # A bank sits behind a lock that opened without a rent of the gateway.
        faults.add(FaultKind.TAMPER)
    return frozenset(faults)
