"""Conformance of a simulated board to slot-bus v1: addressing, errors and every command."""

from __future__ import annotations

import pytest

from cabinet_sim import Cabinet, InjectedFault, ManualClock
from protocol.slotbus import (
    NO_BANK_ID,
    BankData,
    BankFault,
    ChargingRequest,
    ChargingResult,
    ChargingState,
    Command,
    Empty,
    EventAck,
    EventKind,
    EventsRequest,
    Identity,
    LockResult,
    LockState,
    ResetRequest,
    SelfTestCheck,
    SelfTestResult,
    SlotFault,
    SlotFlag,
    SlotRef,
    SlotsStatus,
    Status,
    TokenRef,
    UnlockRequest,
    encode_frame,
    encode_request,
)
from protocol.slotbus.constants import BOARD_TURNAROUND_S, CHARGE_UNKNOWN, RESPONSE_FLAG
from tests.cabinet_sim.conftest import Master

BANK = bytes.fromhex("00000000A1B2C3D4")


def test_answers_only_its_address(cabinet: Cabinet, master: Master) -> None:
    assert master.exchange(1, Command.IDENTIFY, Empty()) is not None
    assert master.exchange(9, Command.IDENTIFY, Empty()) is None


def test_echoes_sequence_number(cabinet: Cabinet, master: Master) -> None:
    for sequence in (0, 1, 200, 255):
        frames = master.frames(encode_request(2, sequence, Command.IDENTIFY, Empty()))
        assert [frame.sequence for frame in frames] == [sequence]
        assert frames[0].address == 2
        assert frames[0].command == Command.IDENTIFY | RESPONSE_FLAG


def test_ignores_bad_crc(cabinet: Cabinet, master: Master) -> None:
    frame = bytearray(encode_request(1, 5, Command.IDENTIFY, Empty()))
    frame[-1] ^= 0x01
    assert master.frames(bytes(frame)) == []
    # The board still responds to the next valid frame.
    assert master.exchange(1, Command.IDENTIFY, Empty()) is not None


def test_ignores_response_frames(cabinet: Cabinet, master: Master) -> None:
    response = encode_frame(1, 5, Command.IDENTIFY | RESPONSE_FLAG, bytes([Status.OK]))
    assert master.frames(response) == []


def test_bytes_fed_one_at_a_time(cabinet: Cabinet, master: Master) -> None:
    frames = []
    for byte in encode_request(3, 9, Command.GET_SLOTS, Empty()):
        frames += master.frames(bytes([byte]))
    assert len(frames) == 1
    assert frames[0].sequence == 9


def test_response_within_turnaround(cabinet: Cabinet) -> None:
    transmissions = cabinet.receive(encode_request(1, 1, Command.IDENTIFY, Empty()))
    assert len(transmissions) == 1
    assert transmissions[0].delay_s <= BOARD_TURNAROUND_S


def test_unknown_command(cabinet: Cabinet, master: Master) -> None:
    frames = master.frames(encode_frame(1, 7, 0x7E, b""))
    assert len(frames) == 1
    assert frames[0].command == 0x7E | RESPONSE_FLAG
    assert frames[0].payload == bytes([Status.UNKNOWN_COMMAND])


@pytest.mark.parametrize("command", list(Command))
def test_wrong_payload_length(cabinet: Cabinet, master: Master, command: Command) -> None:
    from protocol.slotbus import COMMANDS

    size = COMMANDS[command].request.size()
    for payload in (bytes(size + 1), bytes(max(0, size - 1)) if size else None):
        if payload is None:
            continue
        frames = master.frames(encode_frame(1, 3, command, payload))
        assert len(frames) == 1
        assert frames[0].payload == bytes([Status.INVALID_ARGUMENT])


@pytest.mark.parametrize(
    ("command", "body"),
    [
        (Command.GET_BANK, SlotRef(0)),
        (Command.GET_BANK, SlotRef(7)),
        (Command.LOCK, SlotRef(0)),
        (Command.SELF_TEST, SlotRef(7)),
        (Command.SET_CHARGING, ChargingRequest(9, True)),
        (Command.UNLOCK, UnlockRequest(0, 30, 1)),
        (Command.UNLOCK, UnlockRequest(7, 30, 1)),
        (Command.UNLOCK, UnlockRequest(1, 0, 1)),
        (Command.UNLOCK, UnlockRequest(1, 121, 1)),
        (Command.UNLOCK, UnlockRequest(1, 30, 0)),
        (Command.QUERY_UNLOCK, TokenRef(0)),
        (Command.READ_EVENTS, EventsRequest(0)),
        (Command.READ_EVENTS, EventsRequest(10)),
        (Command.ACK_EVENTS, EventAck(2, 1)),  # id 1 (BOARD_BOOT) is the last issued
        (Command.RESET, ResetRequest(0x1234)),
    ],
)
def test_out_of_range_fields(
    cabinet: Cabinet, master: Master, command: Command, body: object
) -> None:
    assert master.status(1, command, body) is Status.INVALID_ARGUMENT  # type: ignore[arg-type]


def test_identify(cabinet: Cabinet, master: Master) -> None:
    identity = master.call(1, Command.IDENTIFY)
    assert isinstance(identity, Identity)
    assert identity.protocol_version == 3
    assert identity.slot_count == 6
    assert identity.boot_count == 1
    assert identity.max_charging == cabinet.config.charging.max_per_board
    assert identity.event_capacity >= 32
    other = master.call(2, Command.IDENTIFY)
    assert isinstance(other, Identity)
    assert other.board_id != identity.board_id


def test_get_slots_empty_and_filled(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(2, bank_id=BANK, charge=55)
    cabinet.advance(0.3)
    status = master.call(1, Command.GET_SLOTS)
    assert isinstance(status, SlotsStatus)
    assert [slot.slot for slot in status.slots] == [1, 2, 3, 4, 5, 6]
    empty, filled = status.slots[0], status.slots[1]
    assert empty.flags == SlotFlag(0)
    assert empty.bank_id == NO_BANK_ID
    assert empty.lock is LockState.LOCKED
    assert filled.flags == SlotFlag.BANK_PRESENT | SlotFlag.BANK_SEATED | SlotFlag.ID_VALID
    assert filled.bank_id == BANK
    assert filled.charge == 55
    assert filled.charging is ChargingState.CHARGING


def test_get_bank_states(cabinet: Cabinet, master: Master) -> None:
    assert master.status(1, Command.GET_BANK, SlotRef(1)) is Status.NO_BANK
    cabinet.insert_bank(1, bank_id=BANK, charge=40, capacity_mah=5000)
    cabinet.insert_bank(2, readable=False)
    cabinet.advance(0.3)
    data = master.call(1, Command.GET_BANK, SlotRef(1))
    assert isinstance(data, BankData)
    assert data.bank_id == BANK
    assert data.charge == 40
    assert data.capacity_mah == 5000
    assert 3300 <= data.voltage_mv <= 4400
    assert data.health <= 100
    assert data.faults == BankFault(0)
    unreadable = master.call(1, Command.GET_BANK, SlotRef(2))
    assert unreadable == BankData(
        2, NO_BANK_ID, CHARGE_UNKNOWN, 0, 0, 0, 0, 0, 0, BankFault.COMMUNICATION
    )


def test_get_bank_before_debounce(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    assert master.status(1, Command.GET_BANK, SlotRef(1)) is Status.NO_BANK


def test_set_charging_off_and_on(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1, charge=30)
    cabinet.advance(0.3)
    off = master.call(1, Command.SET_CHARGING, ChargingRequest(1, False))
    assert off == ChargingResult(1, ChargingState.OFF)
    on = master.call(1, Command.SET_CHARGING, ChargingRequest(1, True))
    assert on == ChargingResult(1, ChargingState.CHARGING)
    empty = master.call(1, Command.SET_CHARGING, ChargingRequest(2, True))
    assert empty == ChargingResult(2, ChargingState.IDLE)
    empty_off = master.call(1, Command.SET_CHARGING, ChargingRequest(2, False))
    assert empty_off == ChargingResult(2, ChargingState.OFF)
    # The switch stays off for the next bank.
    cabinet.insert_bank(2, charge=30)
    cabinet.advance(1)
    assert cabinet.slot(2).charging is ChargingState.OFF


def test_self_test(cabinet: Cabinet, master: Master) -> None:
    assert master.call(1, Command.SELF_TEST, SlotRef(1)) == SelfTestResult(1, SelfTestCheck(0))
    cabinet.set_fault(1, InjectedFault.LOCK_STUCK)
    cabinet.set_fault(1, InjectedFault.CHARGER)
    result = master.call(1, Command.SELF_TEST, SlotRef(1))
    assert result == SelfTestResult(1, SelfTestCheck.LOCK_ACTUATOR | SelfTestCheck.CHARGER)


def test_self_test_busy_in_window(cabinet: Cabinet, master: Master) -> None:
    master.call(1, Command.UNLOCK, UnlockRequest(1, 30, 5))
    assert master.status(1, Command.SELF_TEST, SlotRef(1)) is Status.BUSY


def test_lock_after_tamper(cabinet: Cabinet, master: Master) -> None:
    cabinet.force_open(3)
    assert cabinet.slot(3).faults & SlotFault.TAMPER
    assert master.call(1, Command.LOCK, SlotRef(3)) == LockResult(3, LockState.LOCKED)
    assert cabinet.slot(3).lock is LockState.LOCKED
    assert not cabinet.slot(3).faults & SlotFault.TAMPER


def test_lock_ends_take_window(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1, bank_id=BANK)
    cabinet.advance(0.3)
    master.drain_events(1)
    master.call(1, Command.UNLOCK, UnlockRequest(1, 30, 5))
    assert master.call(1, Command.LOCK, SlotRef(1)) == LockResult(1, LockState.LOCKED)
    assert cabinet.slot(1).window is None
    events = master.drain_events(1)
    assert [(e.kind, e.token, e.bank_id) for e in events] == [(EventKind.UNLOCK_NOT_TAKEN, 5, BANK)]
    cabinet.advance(60)
    assert master.drain_events(1) == []


def test_lock_not_returned_answers_slot_fault(cabinet: Cabinet, master: Master) -> None:
    cabinet.set_fault(2, InjectedFault.LOCK_NOT_RETURNED)
    cabinet.force_open(2)
    assert master.status(1, Command.LOCK, SlotRef(2)) is Status.SLOT_FAULT
    assert cabinet.slot(2).faults & SlotFault.LOCK_NOT_RETURNED
    cabinet.set_fault(2, InjectedFault.LOCK_NOT_RETURNED, active=False)
    assert master.call(1, Command.LOCK, SlotRef(2)) == LockResult(2, LockState.LOCKED)
    assert not cabinet.slot(2).faults & SlotFault.LOCK_NOT_RETURNED


def test_lock_sensor_fault_shows_fault_state(cabinet: Cabinet, master: Master) -> None:
    cabinet.set_fault(4, InjectedFault.LOCK_SENSOR)
    status = master.call(1, Command.GET_SLOTS)
    assert isinstance(status, SlotsStatus)
    assert status.slots[3].lock is LockState.FAULT
    assert status.slots[3].faults & SlotFault.SENSOR


def test_boards_keep_separate_state(clock: ManualClock, cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(7)  # slot 1 of board 2
    cabinet.advance(0.3)
    assert master.read_events(1).pending == 0
    assert master.read_events(2).pending == 1


def test_unencodable_value_is_internal_error(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    cabinet.set_temperature(1, 4000.0)
    assert master.status(1, Command.GET_BANK, SlotRef(1)) is Status.INTERNAL_ERROR
    # The OVERHEAT event value saturates at the top of its 16-bit range.
    cabinet.advance(0.1)
    values = [e.value for e in master.drain_events(1) if e.kind is EventKind.OVERHEAT]
    assert values == [0x7FFF]


def test_enable_must_be_boolean(cabinet: Cabinet, master: Master) -> None:
    frames = master.frames(encode_frame(1, 4, Command.SET_CHARGING, bytes([1, 2])))
    assert [frame.payload for frame in frames] == [bytes([Status.INVALID_ARGUMENT])]


def test_reboot_keeps_open_latch_faults(cabinet: Cabinet, master: Master) -> None:
    cabinet.force_open(1)
    cabinet.set_fault(2, InjectedFault.LOCK_STUCK)
    master.call(1, Command.UNLOCK, UnlockRequest(2, 5, 1))
    cabinet.power_cycle(1)
    assert cabinet.slot(1).faults & SlotFault.TAMPER
    assert not cabinet.slot(2).faults & SlotFault.LOCK_STUCK
