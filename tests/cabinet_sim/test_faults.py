"""Fault switches of the simulated line and boards, and determinism under a seed."""

from __future__ import annotations

from cabinet_sim import Cabinet, FaultRates, InjectedFault, ManualClock
from protocol.slotbus import (
    ChargingState,
    Command,
    Deframer,
    Empty,
    EventKind,
    Identity,
    LockResult,
    LockState,
    SelfTestCheck,
    SelfTestResult,
    SlotFault,
    SlotRef,
    SlotsStatus,
    UnlockCode,
    UnlockRequest,
    UnlockResult,
    decode_response,
    encode_request,
)
from tests.cabinet_sim.conftest import Master, empty_config

IDENTIFY = encode_request(1, 1, Command.IDENTIFY, Empty())


def test_corrupted_bytes(cabinet: Cabinet) -> None:
    cabinet.link.corrupt_byte_rate = 0.05
    answered = sum(1 for _ in range(200) if Deframer().feed(cabinet.handle_bytes(IDENTIFY)))
    # A 7-byte request and a 30-byte response each survive with probability 0.95**n.
    assert 10 < answered < 60


def test_corruption_off_by_default(cabinet: Cabinet) -> None:
    for _ in range(50):
        assert len(Deframer().feed(cabinet.handle_bytes(IDENTIFY))) == 1


def test_dropped_response_still_acts(cabinet: Cabinet, master: Master) -> None:
    cabinet.link.drop_response_rate = 1.0
    request = encode_request(1, 2, Command.UNLOCK, UnlockRequest(1, 30, 55))
    assert cabinet.handle_bytes(request) == b""
    cabinet.link.drop_response_rate = 0.0
    again = master.call(1, Command.UNLOCK, UnlockRequest(1, 30, 55))
    assert again == UnlockResult(1, 55, UnlockCode.OPENED, repeated=True)


def test_late_response(cabinet: Cabinet) -> None:
    cabinet.link.late_response_rate = 1.0
    cabinet.link.late_response_delay_s = 0.3
    transmissions = cabinet.receive(IDENTIFY)
    assert len(transmissions) == 1
    assert transmissions[0].delay_s >= 0.3


def test_silent_board(cabinet: Cabinet, master: Master) -> None:
    cabinet.set_board_silent(2)
    assert master.exchange(2, Command.IDENTIFY, Empty()) is None
    assert master.exchange(1, Command.IDENTIFY, Empty()) is not None
    cabinet.insert_bank(7)  # board 2 keeps working while silent
    cabinet.advance(0.3)
    cabinet.set_board_silent(2, silent=False)
    assert master.read_events(2).pending == 1


def test_local_echo(cabinet: Cabinet) -> None:
    cabinet.link.local_echo = True
    transmissions = cabinet.receive(IDENTIFY)
    assert [t.echo for t in transmissions] == [True, False]
    assert transmissions[0].data == IDENTIFY
    frames = Deframer().feed(cabinet.handle_bytes(IDENTIFY))
    # The master receives its own request first, then the response.
    assert [frame.is_response for frame in frames] == [False, True]


def test_port_down_and_up(cabinet: Cabinet) -> None:
    cabinet.port_down(5.0)
    assert cabinet.handle_bytes(IDENTIFY) == b""
    cabinet.advance(5.0)
    assert cabinet.port_online
    assert Deframer().feed(cabinet.handle_bytes(IDENTIFY))


def test_random_lock_faults(clock: ManualClock) -> None:
    config = empty_config(faults=FaultRates(lock_stuck_rate=0.5))
    cabinet = Cabinet(config, clock=clock)
    master = Master(cabinet)
    results = []
    for token in range(1, 41):
        result = master.call(1, Command.UNLOCK, UnlockRequest(1, 1, token))
        assert isinstance(result, UnlockResult)
        results.append(result.result)
        cabinet.advance(1)
    assert 8 < results.count(UnlockCode.LOCK_FAULT) < 32


def _run(seed: int) -> list[bytes]:
    clock = ManualClock()
    config = empty_config(seed=seed, physics_step_s=10.0, faults=FaultRates(corrupt_byte_rate=0.01))
    config = config.model_copy(
        update={"banks": config.banks.model_copy(update={"fill_ratio": 0.7})}
    )
    cabinet = Cabinet(config, clock=clock)
    out = []
    for sequence in range(30):
        out.append(
            cabinet.handle_bytes(
                encode_request(1 + sequence % 4, sequence, Command.GET_SLOTS, Empty())
            )
        )
        cabinet.advance(60)
    return out


def test_same_seed_same_run() -> None:
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)


def test_seed_sets_bank_mix(clock: ManualClock) -> None:
    config = empty_config(seed=3)
    config = config.model_copy(
        update={"banks": config.banks.model_copy(update={"fill_ratio": 1.0})}
    )
    cabinet = Cabinet(config, clock=clock)
    frame = Deframer().feed(cabinet.handle_bytes(encode_request(1, 1, Command.GET_SLOTS, Empty())))[
        0
    ]
    status = decode_response(frame).body
    assert isinstance(status, SlotsStatus)
    assert all(slot.bank_id != bytes(8) for slot in status.slots)
    identity = Master(cabinet).call(1, Command.IDENTIFY)
    assert isinstance(identity, Identity)


def test_lock_confirmation_delay(clock: ManualClock) -> None:
    cabinet = Cabinet(empty_config(lock_confirm_s=0.25), clock=clock)
    unlock = cabinet.receive(encode_request(1, 3, Command.UNLOCK, UnlockRequest(2, 30, 8)))
    assert [t.delay_s >= 0.25 for t in unlock] == [True]
    identify = cabinet.receive(IDENTIFY)
    assert [t.delay_s < 0.005 for t in identify] == [True]


def test_contacts_fault(cabinet: Cabinet, master: Master) -> None:
    cabinet.set_fault(1, InjectedFault.CONTACTS)
    cabinet.insert_bank(1, charge=30)
    cabinet.advance(1)
    slot = cabinet.slot(1)
    assert slot.faults & SlotFault.CONTACT
    assert slot.faults & SlotFault.ID_READ
    assert slot.charging is ChargingState.IDLE
    events = master.drain_events(1)
    assert [(e.kind, e.value) for e in events] == [
        (EventKind.BANK_INSERTED, 0),
        (EventKind.ID_READ_FAILED, 0),
    ]
    result = master.call(1, Command.SELF_TEST, SlotRef(1))
    assert result == SelfTestResult(1, SelfTestCheck.CONTACTS)


def test_temperature_sensor_fault(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1, charge=30)
    cabinet.set_fault(1, InjectedFault.TEMPERATURE_SENSOR)
    cabinet.advance(1)
    assert cabinet.slot(1).charging is ChargingState.CUTOFF
    assert cabinet.slot(1).faults & SlotFault.SENSOR
    result = master.call(1, Command.SELF_TEST, SlotRef(1))
    assert result == SelfTestResult(1, SelfTestCheck.TEMPERATURE_SENSOR)


def test_random_unreturned_solenoids(clock: ManualClock) -> None:
    cabinet = Cabinet(empty_config(faults=FaultRates(lock_not_returned_rate=0.5)), clock=clock)
    master = Master(cabinet)
    not_returned = 0
    for token in range(1, 41):
        master.call(1, Command.UNLOCK, UnlockRequest(1, 1, token))
        cabinet.advance(1)
        if cabinet.slot(1).lock is LockState.OPEN:
            not_returned += 1
            assert master.call(1, Command.LOCK, SlotRef(1)) == LockResult(1, LockState.LOCKED)
    assert 8 < not_returned < 32
