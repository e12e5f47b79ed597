"""Unlock, take windows, token dedupe and QUERY_UNLOCK on a simulated board."""

from __future__ import annotations

import pytest

from cabinet_sim import Cabinet, InjectedFault, SimulationError
from protocol.slotbus import (
    NO_BANK_ID,
    Command,
    EventKind,
    LockState,
    SlotFault,
    SlotFlag,
    SlotsStatus,
    Status,
    TokenRef,
    TokenState,
    UnlockCode,
    UnlockRequest,
    UnlockResult,
    UnlockStatus,
)
from protocol.slotbus.constants import SETTLE_AFTER_EJECT_S, TOKEN_CACHE_SIZE
from tests.cabinet_sim.conftest import Master

BANK = bytes.fromhex("0000000011223344")


@pytest.fixture
def loaded(cabinet: Cabinet, master: Master) -> Cabinet:
    """The cabinet with bank BANK in slot 1, detected and its event acknowledged."""
    cabinet.insert_bank(1, bank_id=BANK, charge=90)
    cabinet.advance(0.3)
    master.drain_events(1)
    return cabinet


def unlock(master: Master, slot: int, token: int, window_s: int = 30) -> UnlockResult:
    result = master.call(1, Command.UNLOCK, UnlockRequest(slot, window_s, token))
    assert isinstance(result, UnlockResult)
    return result


def query(master: Master, token: int) -> UnlockStatus:
    status = master.call(1, Command.QUERY_UNLOCK, TokenRef(token))
    assert isinstance(status, UnlockStatus)
    return status


def test_unlock_then_take(loaded: Cabinet, master: Master) -> None:
    assert unlock(master, 1, 1001) == UnlockResult(1, 1001, UnlockCode.OPENED, False)
    assert query(master, 1001) == UnlockStatus(1001, TokenState.WINDOW_OPEN, 1, BANK)
    assert loaded.slot(1).lock is LockState.OPEN
    loaded.advance(5)
    bank = loaded.take(1)
    assert bank.bank_id == BANK
    events = master.drain_events(1)
    assert [(e.kind, e.token, e.bank_id) for e in events] == [(EventKind.UNLOCK_TAKEN, 1001, BANK)]
    assert query(master, 1001) == UnlockStatus(1001, TokenState.TAKEN, 1, BANK)
    assert loaded.slot(1).lock is LockState.LOCKED


def test_window_expires_not_taken(loaded: Cabinet, master: Master) -> None:
    unlock(master, 1, 7, window_s=10)
    loaded.advance(9.9)
    assert master.drain_events(1) == []
    loaded.advance(0.2)
    events = master.drain_events(1)
    assert [(e.kind, e.token, e.bank_id) for e in events] == [(EventKind.UNLOCK_NOT_TAKEN, 7, BANK)]
    assert events[0].uptime_ms == pytest.approx(10_300, abs=2)
    assert query(master, 7).state is TokenState.NOT_TAKEN
    assert loaded.slot(1).lock is LockState.LOCKED
    assert loaded.slot(1).bank is not None


def test_empty_slot_unlock_ends_not_taken(cabinet: Cabinet, master: Master) -> None:
    unlock(master, 2, 8, window_s=5)
    cabinet.advance(5)
    events = master.drain_events(1)
    assert [(e.kind, e.slot, e.bank_id) for e in events] == [
        (EventKind.UNLOCK_NOT_TAKEN, 2, NO_BANK_ID)
    ]


def test_stuck_lock(loaded: Cabinet, master: Master) -> None:
    loaded.set_fault(1, InjectedFault.LOCK_STUCK)
    assert unlock(master, 1, 9).result is UnlockCode.LOCK_FAULT
    events = master.drain_events(1)
    assert [(e.kind, e.token, e.value) for e in events] == [
        (EventKind.UNLOCK_LOCK_FAULT, 9, SlotFault.LOCK_STUCK)
    ]
    assert query(master, 9).state is TokenState.LOCK_FAULT
    assert loaded.slot(1).faults & SlotFault.LOCK_STUCK
    assert loaded.slot(1).lock is LockState.LOCKED
    loaded.advance(60)
    assert master.drain_events(1) == []


def test_busy_while_window_runs(loaded: Cabinet, master: Master) -> None:
    unlock(master, 1, 10)
    assert master.status(1, Command.UNLOCK, UnlockRequest(1, 30, 11)) is Status.BUSY
    # A rejected token is not remembered.
    assert query(master, 11).state is TokenState.UNKNOWN


def test_repeated_token_acts_once(loaded: Cabinet, master: Master) -> None:
    first = unlock(master, 1, 12)
    loaded.advance(2)
    again = unlock(master, 1, 12)
    assert again == UnlockResult(first.slot, 12, first.result, repeated=True)
    # Even for another slot, a known token only returns the cached result.
    elsewhere = unlock(master, 3, 12)
    assert elsewhere == UnlockResult(1, 12, UnlockCode.OPENED, repeated=True)
    assert loaded.slot(3).lock is LockState.LOCKED
    loaded.advance(40)
    again_after = unlock(master, 1, 12)
    assert again_after.repeated
    events = master.drain_events(1)
    assert [e.kind for e in events] == [EventKind.UNLOCK_NOT_TAKEN]
    assert loaded.slot(1).lock is LockState.LOCKED


def test_repeated_lock_fault_token(loaded: Cabinet, master: Master) -> None:
    loaded.set_fault(1, InjectedFault.LOCK_STUCK)
    unlock(master, 1, 13)
    loaded.set_fault(1, InjectedFault.LOCK_STUCK, active=False)
    assert unlock(master, 1, 13) == UnlockResult(1, 13, UnlockCode.LOCK_FAULT, repeated=True)
    assert loaded.slot(1).lock is LockState.LOCKED


def test_token_cache_keeps_recent_tokens(cabinet: Cabinet, master: Master) -> None:
    for token in range(1, TOKEN_CACHE_SIZE + 2):
        unlock(master, 1 + token % 6, token, window_s=1)
        cabinet.advance(1)
    assert query(master, 1).state is TokenState.UNKNOWN
    for token in range(2, TOKEN_CACHE_SIZE + 2):
        assert query(master, token).state is TokenState.NOT_TAKEN


def test_query_unknown_token(cabinet: Cabinet, master: Master) -> None:
    assert query(master, 424242) == UnlockStatus(424242, TokenState.UNKNOWN, 0, NO_BANK_ID)


def test_status_stale_while_settling(loaded: Cabinet, master: Master) -> None:
    unlock(master, 1, 20)
    loaded.advance(1)
    loaded.take(1)
    stale = master.call(1, Command.GET_SLOTS)
    assert isinstance(stale, SlotsStatus)
    assert stale.slots[0].flags & SlotFlag.BANK_PRESENT
    assert stale.slots[0].bank_id == BANK
    loaded.advance(SETTLE_AFTER_EJECT_S)
    settled = master.call(1, Command.GET_SLOTS)
    assert isinstance(settled, SlotsStatus)
    assert settled.slots[0].flags == SlotFlag(0)
    assert settled.slots[0].bank_id == NO_BANK_ID


def test_take_window_flag(loaded: Cabinet, master: Master) -> None:
    unlock(master, 1, 21, window_s=3)
    status = master.call(1, Command.GET_SLOTS)
    assert isinstance(status, SlotsStatus)
    assert status.slots[0].flags & SlotFlag.TAKE_WINDOW
    assert status.slots[0].lock is LockState.OPEN
    loaded.advance(3)
    status = master.call(1, Command.GET_SLOTS)
    assert isinstance(status, SlotsStatus)
    assert not status.slots[0].flags & SlotFlag.TAKE_WINDOW


def test_lock_not_returned(loaded: Cabinet, master: Master) -> None:
    loaded.set_fault(1, InjectedFault.LOCK_NOT_RETURNED)
    unlock(master, 1, 30, window_s=5)
    loaded.take(1)
    events = master.drain_events(1)
    assert [e.kind for e in events] == [EventKind.UNLOCK_TAKEN, EventKind.LOCK_NOT_RETURNED]
    assert loaded.slot(1).lock is LockState.OPEN
    assert loaded.slot(1).faults & SlotFault.LOCK_NOT_RETURNED
    # The slot stays open: a bank put in can be pulled out again without any unlock.
    loaded.insert_bank(1)
    loaded.advance(0.3)
    loaded.remove_bank(1)
    kinds = [e.kind for e in master.drain_events(1)]
    assert kinds == [EventKind.BANK_INSERTED, EventKind.BANK_REMOVED]


def test_lock_not_returned_event_fields(loaded: Cabinet, master: Master) -> None:
    loaded.set_fault(1, InjectedFault.LOCK_NOT_RETURNED)
    unlock(master, 1, 31, window_s=2)
    loaded.advance(2)
    events = master.drain_events(1)
    assert [(e.kind, e.token, e.value) for e in events] == [
        (EventKind.UNLOCK_NOT_TAKEN, 31, 0),
        (EventKind.LOCK_NOT_RETURNED, 0, 0),
    ]


def test_each_token_ends_once(loaded: Cabinet, master: Master) -> None:
    unlock(master, 1, 40, window_s=5)
    loaded.take(1)
    loaded.advance(10)
    terminal = [e for e in master.drain_events(1) if e.token == 40]
    assert len(terminal) == 1


def test_take_outside_window_rejected(loaded: Cabinet) -> None:
    with pytest.raises(SimulationError):
        loaded.take(1)
    with pytest.raises(SimulationError):
        loaded.remove_bank(1)
