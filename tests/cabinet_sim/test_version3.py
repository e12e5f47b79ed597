"""Protocol version 3 on a simulated board: GET_SLOT_RANGE and ACK_AND_READ_EVENTS."""

from __future__ import annotations

import pytest

from cabinet_sim import REBOOT_S, Cabinet, ManualClock
from protocol.slotbus import (
    AckAndRead,
    Capability,
    Command,
    Empty,
    EventBatch,
    EventKind,
    Identity,
    SlotFlag,
    SlotRange,
    SlotsStatus,
    Status,
)
from tests.cabinet_sim.conftest import Master, empty_config


def _range(master: Master, first_slot: int, count: int) -> SlotsStatus:
    status = master.call(1, Command.GET_SLOT_RANGE, SlotRange(first_slot, count))
    assert isinstance(status, SlotsStatus)
    return status


def _ack_and_read(master: Master, up_to: int, boot_count: int, count: int = 9) -> EventBatch:
    batch = master.call(1, Command.ACK_AND_READ_EVENTS, AckAndRead(up_to, boot_count, count))
    assert isinstance(batch, EventBatch)
    return batch


def test_identify_reports_version_3_bits(master: Master) -> None:
    identity = master.call(1, Command.IDENTIFY, Empty())
    assert isinstance(identity, Identity)
    assert identity.protocol_version == 3
    assert Capability.SLOT_RANGE in identity.capabilities
    assert Capability.ACK_ON_READ in identity.capabilities


def test_slot_range_matches_get_slots(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(3, charge=70)
    cabinet.advance(0.3)
    whole = master.call(1, Command.GET_SLOTS, Empty())
    assert isinstance(whole, SlotsStatus)

    assert _range(master, 3, 1).slots == (whole.slots[2],)
    assert _range(master, 2, 5).slots == whole.slots[1:6]
    assert _range(master, 3, 1).slots[0].flags & SlotFlag.BANK_PRESENT


@pytest.mark.parametrize(("first_slot", "count"), [(0, 1), (1, 0), (6, 2), (7, 1), (1, 7)])
def test_slot_range_outside_board_rejected(master: Master, first_slot: int, count: int) -> None:
    request = SlotRange(first_slot, count)
    assert master.status(1, Command.GET_SLOT_RANGE, request) is Status.INVALID_ARGUMENT


def test_ack_and_read_order(cabinet: Cabinet, master: Master) -> None:
    for slot in range(1, 5):
        cabinet.insert_bank(slot)
    cabinet.advance(0.3)
    boot = cabinet.board(1).boot_count

    first = _ack_and_read(master, 0, boot, count=2)
    assert [e.event_id for e in first.events] == [2, 3]
    assert first.pending == 4
    second = _ack_and_read(master, first.events[-1].event_id, boot)
    assert [e.event_id for e in second.events] == [4, 5]
    assert second.pending == 2
    # A repeat after a lost reply removes nothing more.
    assert _ack_and_read(master, first.events[-1].event_id, boot) == second
    assert _ack_and_read(master, 5, boot).events == ()


def test_ack_past_last_id_rejected(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    boot = cabinet.board(1).boot_count
    too_far = AckAndRead(3, boot, 9)  # id 2 is the last issued
    assert master.status(1, Command.ACK_AND_READ_EVENTS, too_far) is Status.INVALID_ARGUMENT
    assert master.status(1, Command.ACK_AND_READ_EVENTS, AckAndRead(0, boot, 0)) is (
        Status.INVALID_ARGUMENT
    )
    assert [e.event_id for e in master.read_events(1).events] == [2]


def test_ack_from_older_boot_removes_nothing(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    before = master.read_events(1)
    cabinet.power_cycle(1)
    cabinet.advance(REBOOT_S * 1.5)
    cabinet.insert_bank(2)
    cabinet.advance(0.3)

    batch = _ack_and_read(master, before.events[-1].event_id, before.boot_count)
    assert batch.boot_count != before.boot_count
    assert [e.kind for e in batch.events] == [EventKind.BOARD_BOOT, EventKind.BANK_INSERTED]


def test_version_2_lacks_new_commands() -> None:
    cabinet = Cabinet(empty_config(slotbus_version=2), clock=ManualClock())
    master = Master(cabinet)
    identity = master.call(1, Command.IDENTIFY, Empty())
    assert isinstance(identity, Identity)
    assert identity.protocol_version == 2
    assert Capability.BANK_BATCH in identity.capabilities
    assert not identity.capabilities & (Capability.SLOT_RANGE | Capability.ACK_ON_READ)
    assert master.status(1, Command.GET_SLOT_RANGE, SlotRange(1, 1)) is Status.UNKNOWN_COMMAND
    request = AckAndRead(0, identity.boot_count, 9)
    assert master.status(1, Command.ACK_AND_READ_EVENTS, request) is Status.UNKNOWN_COMMAND
