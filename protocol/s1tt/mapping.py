"""Map S1TT statuses, slot bits and bank states onto the cabinet vocabulary.

S1TT has no unlock token and no event queue: an UNLOCK reply with status OK only means
that the board fired the lock. Whether the bank was taken is decided by the driver from
the SLOTS bits after the sensors settle, so the mapping leaves the outcome open there.
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
from protocol.s1tt.codes import BankState, Status
from protocol.s1tt.messages import SlotBits


@dataclass(frozen=True, slots=True)
class EjectResult:
    """Meaning of one UNLOCK reply for the eject that sent the UNLOCK."""

    outcome: EjectOutcome | None  # None: the lock opened, the take is not known yet
    fail_reason: EjectFailReason | None = None
    reject_reason: EjectRejectReason | None = None


UNLOCK_RESULTS: dict[Status, EjectResult] = {
    Status.OK: EjectResult(None),
    # The board could not reach the bank or the lock in time.
    Status.TIMEOUT: EjectResult(EjectOutcome.FAILED, fail_reason=EjectFailReason.TIMEOUT),
    Status.INVALID_COMMAND: EjectResult(
        EjectOutcome.FAILED, fail_reason=EjectFailReason.BOARD_ERROR
    ),
    # The board checks only the slot number, so a rejected argument is a slot it lacks.
    Status.INVALID_ARGUMENTS: EjectResult(
        EjectOutcome.REJECTED, reject_reason=EjectRejectReason.UNKNOWN_SLOT
    ),
    Status.INTERNAL_ERROR: EjectResult(
        EjectOutcome.FAILED, fail_reason=EjectFailReason.BOARD_ERROR
    ),
}


def unlock_result(status: int) -> EjectResult:
    """Return the meaning of an UNLOCK status; an undefined status is a board error."""
    try:
        return UNLOCK_RESULTS[Status(status)]
    except ValueError:
        return UNLOCK_RESULTS[Status.INTERNAL_ERROR]


BANK_STATES: dict[BankState, SlotState] = {
    BankState.IDLE: SlotState.READY,
    BankState.PLUGGED_IN: SlotState.READY,
    BankState.CHARGING: SlotState.CHARGING,
    BankState.DISCHARGING: SlotState.READY,
    BankState.CUTOFF: SlotState.FAULTED,  # deeply discharged: never rentable until recovered
}


def slot_state(
    bits: SlotBits, bank: BankState | None, *, unlock_pending: bool = False
) -> SlotState:
    """Return the cabinet state of a slot from its SLOTS bits and its bank's STATUS state.

    `bank` is None when STATUS was not read or failed. `unlock_pending` is set by the driver
    while a take window of its own unlock is running.
    """
    if not bits.filled:
        return SlotState.EMPTY
    if not bits.locked:
        return SlotState.AWAITING_TAKE if unlock_pending else SlotState.FAULTED
    if bank is None:
        return SlotState.UNKNOWN
    return BANK_STATES[bank]


def slot_faults(bits: SlotBits, *, unlock_pending: bool = False) -> frozenset[FaultKind]:
    """Return the faults that a slot's bits show."""
    if bits.filled and not bits.locked and not unlock_pending:
        # A bank sits behind a lock that opened without an unlock of the gateway.
        return frozenset({FaultKind.TAMPER})
    return frozenset()
