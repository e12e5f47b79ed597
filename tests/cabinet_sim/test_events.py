"""Event queue, RESET and physical events (insertion, removal, tamper) of a simulated board."""

from __future__ import annotations

import pytest

from cabinet_sim import REBOOT_S, Cabinet, ManualClock
from protocol.slotbus import (
    NO_BANK_ID,
    BootReason,
    Command,
    Empty,
    EventAck,
    EventAckResult,
    EventKind,
    Identity,
    InsertFlag,
    ResetRequest,
    SlotFault,
    Status,
    TokenRef,
    TokenState,
    UnlockRequest,
    UnlockStatus,
)
from protocol.slotbus.constants import RESET_MAGIC
from tests.cabinet_sim.conftest import Master, empty_config

BANK = bytes.fromhex("00000000CAFE0001")


def test_first_event_is_boot(cabinet: Cabinet) -> None:
    master = Master(cabinet)
    batch = master.read_events(1)
    assert batch.pending == 1
    assert batch.dropped == 0
    assert [(e.event_id, e.kind, e.value) for e in batch.events] == [
        (1, EventKind.BOARD_BOOT, BootReason.POWER_ON)
    ]


def test_read_is_repeatable_and_ordered(cabinet: Cabinet, master: Master) -> None:
    for slot in range(1, 6):
        cabinet.insert_bank(slot)
    cabinet.advance(0.3)
    first = master.read_events(1, count=3)
    again = master.read_events(1, count=3)
    assert first == again
    assert first.pending == 5
    assert [e.event_id for e in first.events] == [2, 3, 4]
    everything = master.read_events(1, count=9)
    assert [e.slot for e in everything.events] == [1, 2, 3, 4, 5]


def test_ack_removes_up_to_id(cabinet: Cabinet, master: Master) -> None:
    for slot in range(1, 5):
        cabinet.insert_bank(slot)
    cabinet.advance(0.3)
    boot = cabinet.board(1).boot_count
    assert master.call(1, Command.ACK_EVENTS, EventAck(3, boot)) == EventAckResult(2)
    assert [e.event_id for e in master.read_events(1).events] == [4, 5]
    # A lower id than already acknowledged is a no-op.
    assert master.call(1, Command.ACK_EVENTS, EventAck(2, boot)) == EventAckResult(2)
    assert master.status(1, Command.ACK_EVENTS, EventAck(6, boot)) is Status.INVALID_ARGUMENT
    assert master.call(1, Command.ACK_EVENTS, EventAck(5, boot)) == EventAckResult(0)


def test_ack_from_older_boot_rejected(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    batch = master.read_events(1)
    cabinet.power_cycle(1)
    cabinet.advance(REBOOT_S * 1.5)
    cabinet.insert_bank(2)
    cabinet.advance(0.3)
    stale = EventAck(batch.events[-1].event_id, batch.boot_count)
    assert master.status(1, Command.ACK_EVENTS, stale) is Status.INVALID_ARGUMENT
    assert [e.kind for e in master.read_events(1).events] == [
        EventKind.BOARD_BOOT,
        EventKind.BANK_INSERTED,
    ]


def test_overflow_counts_dropped(cabinet: Cabinet, master: Master) -> None:
    capacity = cabinet.board(1).events.capacity
    for round_number in range(capacity // 2 + 3):
        slot = 1 + round_number % 6
        cabinet.insert_bank(slot)
        cabinet.advance(0.3)
        cabinet.force_open(slot)
        cabinet.remove_bank(slot)
        cabinet.board(1).lock_slot(slot)
    batch = master.read_events(1)
    assert batch.pending == capacity
    assert batch.dropped > 0
    produced = 3 * (capacity // 2 + 3)
    assert batch.pending + batch.dropped == produced
    last = cabinet.board(1).events.last_id
    master.call(1, Command.ACK_EVENTS, EventAck(last, batch.boot_count))
    cabinet.insert_bank(1) if cabinet.slot(1).bank is None else cabinet.tamper(1)
    cabinet.advance(0.3)
    after = master.read_events(1)
    assert after.events[0].event_id == last + 1
    assert after.dropped == batch.dropped


def test_dropped_saturates(cabinet: Cabinet, master: Master) -> None:
    queue = cabinet.board(1).events
    for _ in range(queue.capacity):
        queue.push(EventKind.OVERHEAT)
    queue.dropped = 0xFFFE
    queue.push(EventKind.OVERHEAT)
    queue.push(EventKind.OVERHEAT)
    assert master.read_events(1).dropped == 0xFFFF


def test_insertion_events(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1, bank_id=BANK)
    cabinet.insert_bank(2, seated=False)
    cabinet.insert_bank(3, backwards=True)
    cabinet.insert_bank(4, readable=False)
    cabinet.advance(0.1)
    assert master.read_events(1).pending == 0
    cabinet.advance(0.15)
    events = master.drain_events(1)
    seen = [(e.kind, e.slot, e.bank_id, e.value) for e in events]
    assert seen == [
        (EventKind.BANK_INSERTED, 1, BANK, InsertFlag.ID_VALID | InsertFlag.SEATED),
        (EventKind.BANK_INSERTED, 2, NO_BANK_ID, 0),
        (EventKind.ID_READ_FAILED, 2, NO_BANK_ID, 0),
        (EventKind.BANK_INSERTED, 3, NO_BANK_ID, 0),
        (EventKind.ID_READ_FAILED, 3, NO_BANK_ID, 0),
        (EventKind.BANK_INSERTED, 4, NO_BANK_ID, InsertFlag.SEATED),
        (EventKind.ID_READ_FAILED, 4, NO_BANK_ID, 0),
    ]
    assert cabinet.slot(4).faults & SlotFault.ID_READ


def test_bounce_shorter_than_debounce(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    cabinet.force_open(1)
    master.drain_events(1)
    cabinet.advance(0.1)
    cabinet.remove_bank(1)
    cabinet.advance(1)
    assert master.drain_events(1) == []


def test_tamper_events(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(5, bank_id=BANK)
    cabinet.advance(0.3)
    master.drain_events(1)
    bank = cabinet.tamper(5)
    assert bank is not None
    events = master.drain_events(1)
    assert [(e.kind, e.slot, e.bank_id) for e in events] == [
        (EventKind.SLOT_OPENED, 5, BANK),
        (EventKind.BANK_REMOVED, 5, BANK),
    ]
    assert cabinet.slot(5).faults & SlotFault.TAMPER


def test_reset_busy_with_unacknowledged_events(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    assert master.status(1, Command.RESET, ResetRequest(RESET_MAGIC)) is Status.BUSY
    master.drain_events(1)
    assert master.status(1, Command.RESET, ResetRequest(RESET_MAGIC)) is Status.OK


def test_reset_allowed_with_only_boot_event(cabinet: Cabinet) -> None:
    master = Master(cabinet)
    assert master.status(1, Command.RESET, ResetRequest(RESET_MAGIC)) is Status.OK


def test_reset_busy_during_take_window(cabinet: Cabinet, master: Master) -> None:
    master.call(1, Command.UNLOCK, UnlockRequest(1, 10, 99))
    master.drain_events(1)
    assert master.status(1, Command.RESET, ResetRequest(RESET_MAGIC)) is Status.BUSY
    assert cabinet.slot(1).window is not None
    cabinet.advance(11)
    kinds = [e.kind for e in master.drain_events(1)]
    assert kinds == [EventKind.UNLOCK_NOT_TAKEN]
    assert master.status(1, Command.RESET, ResetRequest(RESET_MAGIC)) is Status.OK


def test_reset_reboots(clock: ManualClock, cabinet: Cabinet, master: Master) -> None:
    master.call(1, Command.UNLOCK, UnlockRequest(1, 1, 77))
    cabinet.advance(1)
    master.drain_events(1)
    assert master.status(1, Command.RESET, ResetRequest(RESET_MAGIC)) is Status.OK
    assert master.exchange(1, Command.IDENTIFY, Empty()) is None
    cabinet.advance(REBOOT_S * 0.9)
    assert master.exchange(1, Command.IDENTIFY, Empty()) is None
    cabinet.advance(REBOOT_S * 0.2)
    identity = master.call(1, Command.IDENTIFY)
    assert isinstance(identity, Identity)
    assert identity.boot_count == 2
    batch = master.read_events(1)
    assert [(e.event_id, e.kind, e.value) for e in batch.events] == [
        (1, EventKind.BOARD_BOOT, BootReason.COMMANDED)
    ]
    status = master.call(1, Command.QUERY_UNLOCK, TokenRef(77))
    assert isinstance(status, UnlockStatus)
    assert status.state is TokenState.UNKNOWN
    # The other boards did not reboot.
    other = master.call(2, Command.IDENTIFY)
    assert isinstance(other, Identity)
    assert other.boot_count == 1


def test_event_capacity_configurable(clock: ManualClock) -> None:
    cabinet = Cabinet(empty_config(event_capacity=64), clock=clock)
    identity = Master(cabinet).call(1, Command.IDENTIFY)
    assert isinstance(identity, Identity)
    assert identity.event_capacity == 64


def test_event_capacity_minimum() -> None:
    with pytest.raises(ValueError, match="event_capacity"):
        empty_config(event_capacity=16)


def test_power_cycle_event(cabinet: Cabinet, master: Master) -> None:
    cabinet.power_cycle(3)
    cabinet.advance(REBOOT_S)
    events = master.drain_events(3)
    assert [(e.event_id, e.kind, e.value) for e in events] == [
        (1, EventKind.BOARD_BOOT, BootReason.POWER_ON)
    ]
