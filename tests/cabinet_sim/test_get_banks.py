"""GET_BANKS on a simulated board, and the version-1 board that lacks it."""

from __future__ import annotations

import pytest

from cabinet_sim import Cabinet, ManualClock
from protocol.slotbus import (
    NO_BANK_ID,
    BankBatch,
    BankData,
    BankFault,
    Capability,
    Command,
    Empty,
    Identity,
    SlotRange,
    SlotRef,
    Status,
    encode_frame,
)
from protocol.slotbus.constants import CHARGE_UNKNOWN, MAX_BANKS_PER_READ, RESPONSE_FLAG
from tests.cabinet_sim.conftest import Master, empty_config


def _batch(master: Master, first_slot: int, count: int, address: int = 1) -> BankBatch:
    batch = master.call(address, Command.GET_BANKS, SlotRange(first_slot, count))
    assert isinstance(batch, BankBatch)
    return batch


def _bank(master: Master, slot: int, address: int = 1) -> BankData:
    data = master.call(address, Command.GET_BANK, SlotRef(slot))
    assert isinstance(data, BankData)
    return data


def _fill_board_1(cabinet: Cabinet) -> None:
    """Slots 1 and 3 readable banks, 4 an unreadable one, 2 and 6 empty, 5 not yet debounced."""
    cabinet.insert_bank(1, charge=40)
    cabinet.insert_bank(3, charge=90)
    cabinet.insert_bank(4, readable=False)
    cabinet.advance(0.3)
    cabinet.insert_bank(5)


def test_records_for_occupied_slots_in_order(cabinet: Cabinet, master: Master) -> None:
    _fill_board_1(cabinet)
    batch = _batch(master, 1, 6)
    assert [record.slot for record in batch.banks] == [1, 3, 4]
    assert batch.banks[0] == _bank(master, 1)
    assert batch.banks[1] == _bank(master, 3)


def test_unreadable_bank_gets_get_bank_record(cabinet: Cabinet, master: Master) -> None:
    _fill_board_1(cabinet)
    record = _batch(master, 4, 1).banks[0]
    assert record == BankData(
        4, NO_BANK_ID, CHARGE_UNKNOWN, 0, 0, 0, 0, 0, 0, BankFault.COMMUNICATION
    )
    assert record == _bank(master, 4)


def test_sub_range_and_empty_range(cabinet: Cabinet, master: Master) -> None:
    _fill_board_1(cabinet)
    assert [record.slot for record in _batch(master, 3, 2).banks] == [3, 4]
    assert [record.slot for record in _batch(master, 2, 1).banks] == []
    # Slot 5's bank is still inside its presence debounce, so the board reports no bank.
    assert _batch(master, 5, 2) == BankBatch(())
    assert master.status(1, Command.GET_BANK, SlotRef(5)) is Status.NO_BANK


def test_records_follow_the_addressed_board(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(8)  # board 2, local slot 2
    cabinet.advance(0.3)
    assert _batch(master, 1, 6, address=1) == BankBatch(())
    assert [record.slot for record in _batch(master, 1, 6, address=2).banks] == [2]


def test_repeat_gives_same_records(cabinet: Cabinet, master: Master) -> None:
    _fill_board_1(cabinet)
    master.drain_events(1)
    first = _batch(master, 1, 6)
    assert _batch(master, 1, 6) == first
    assert master.read_events(1).pending == 0


@pytest.mark.parametrize(
    ("first_slot", "count"),
    [(0, 1), (0, 6), (1, 0), (1, 7), (6, 2), (7, 1), (255, 1), (1, MAX_BANKS_PER_READ + 1)],
)
def test_range_outside_board_is_invalid(master: Master, first_slot: int, count: int) -> None:
    status = master.status(1, Command.GET_BANKS, SlotRange(first_slot, count))
    assert status is Status.INVALID_ARGUMENT


def test_count_limit_on_twelve_slot_board() -> None:
    cabinet = Cabinet(empty_config(boards=1, slots_per_board=12), clock=ManualClock())
    for slot in (1, 10, 11, 12):
        cabinet.insert_bank(slot)
    cabinet.advance(0.3)
    master = Master(cabinet)
    assert [record.slot for record in _batch(master, 1, MAX_BANKS_PER_READ).banks] == [1, 10]
    assert [record.slot for record in _batch(master, 11, 2).banks] == [11, 12]
    assert [record.slot for record in _batch(master, 3, MAX_BANKS_PER_READ).banks] == [10, 11, 12]
    over = SlotRange(1, MAX_BANKS_PER_READ + 1)
    assert master.status(1, Command.GET_BANKS, over) is Status.INVALID_ARGUMENT


def test_identify_reports_bank_batch(master: Master) -> None:
    identity = master.call(1, Command.IDENTIFY, Empty())
    assert isinstance(identity, Identity)
    assert identity.protocol_version >= 2
    assert Capability.BANK_BATCH in identity.capabilities


def test_version_1_board_lacks_get_banks() -> None:
    cabinet = Cabinet(empty_config(slotbus_version=1), clock=ManualClock())
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    master = Master(cabinet)
    identity = master.call(1, Command.IDENTIFY, Empty())
    assert isinstance(identity, Identity)
    assert identity.protocol_version == 1
    assert Capability.BANK_BATCH not in identity.capabilities
    assert Capability.UNLOCK_TOKENS in identity.capabilities
    assert master.status(1, Command.GET_BANKS, SlotRange(1, 6)) is Status.UNKNOWN_COMMAND
    assert _bank(master, 1).slot == 1


def test_version_1_rejects_any_get_banks() -> None:
    # A board that does not know the command cannot check its payload length.
    cabinet = Cabinet(empty_config(slotbus_version=1), clock=ManualClock())
    frames = Master(cabinet).frames(encode_frame(1, 9, Command.GET_BANKS, b"\x01"))
    assert len(frames) == 1
    assert frames[0].command == Command.GET_BANKS | RESPONSE_FLAG
    assert frames[0].payload == bytes([Status.UNKNOWN_COMMAND])
