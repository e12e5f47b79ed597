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
from protocol.s1tt.constants import SLOTS_PER_BOARD
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
    # UNLOCK has only a slot argument, so a rejected argument is a slot the board lacks.
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


def board_slot(cabinet_slot: int) -> tuple[int, int]:
    """Return the board address and the 0-based board slot of a 1-based cabinet slot."""
    if cabinet_slot < 1:
        raise ValueError(f"cabinet slot {cabinet_slot} must be 1 or more")
    return divmod(cabinet_slot - 1, SLOTS_PER_BOARD)


def cabinet_slot(board_address: int, slot: int) -> int:
    """Return the 1-based cabinet slot of a board address and a 0-based board slot."""
    if board_address < 0 or not 0 <= slot < SLOTS_PER_BOARD:
        raise ValueError(f"board {board_address} slot {slot} is outside the cabinet layout")
    return board_address * SLOTS_PER_BOARD + slot + 1
