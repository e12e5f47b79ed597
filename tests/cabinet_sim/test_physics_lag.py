"""Physics that lags the clock while bytes arrive, and the events that must keep their timing."""

from __future__ import annotations

from cabinet_sim import Cabinet, ManualClock
from cabinet_sim.cabinet import RECEIVE_PHYSICS_LAG_S
from cabinet_sim.timeline import Timeline
from protocol.slotbus import (
    BankData,
    BoardEvent,
    ChargingRequest,
    Command,
    Empty,
    EventKind,
    SlotRef,
    UnlockRequest,
    encode_request,
)
from tests.cabinet_sim.conftest import Master, empty_config

IDENTIFY = encode_request(1, 1, Command.IDENTIFY, Empty())
IDENTIFY_BOARD_2 = encode_request(2, 1, Command.IDENTIFY, Empty())


def _physics_calls() -> tuple[Timeline, list[float]]:
    steps: list[float] = []
    return Timeline(0.0, steps.append, max_step_s=1.0), steps


def test_lag_skips_small_steps() -> None:
    timeline, steps = _physics_calls()
    timeline.run_until(0.01, max_physics_lag_s=0.05)
    timeline.run_until(0.04, max_physics_lag_s=0.05)
    assert steps == []
    assert timeline.now == 0.04
    assert timeline.physics_time == 0.0
    timeline.run_until(0.06, max_physics_lag_s=0.05)
    assert steps == [0.06]
    assert timeline.physics_time == 0.06


def test_timer_gets_physics_up_to_its_instant() -> None:
    timeline, steps = _physics_calls()
    seen: list[tuple[float, float]] = []
    timeline.schedule(0.02, lambda: seen.append((timeline.now, timeline.physics_time)))
    timeline.run_until(0.03, max_physics_lag_s=0.05)
    assert seen == [(0.02, 0.02)]
    assert steps == [0.02]
    assert timeline.now == 0.03
    assert timeline.physics_time == 0.02


def test_exact_run_catches_up_lag() -> None:
    timeline, steps = _physics_calls()
    timeline.run_until(0.03, max_physics_lag_s=0.05)
    timeline.run_until(2.5)
    assert steps == [1.0, 1.0, 0.5]
    assert timeline.physics_time == 2.5
    assert timeline.now == 2.5


def test_receive_syncs_only_addressed_board(clock: ManualClock, cabinet: Cabinet) -> None:
    clock.advance(RECEIVE_PHYSICS_LAG_S / 2)
    cabinet.receive(IDENTIFY)
    assert cabinet.now == RECEIVE_PHYSICS_LAG_S / 2
    assert cabinet.board(1).physics_time == cabinet.now
    assert cabinet.board(2).physics_time == 0.0
    assert cabinet.timeline.physics_time == 0.0


def test_receive_catches_up_after_lag(clock: ManualClock, cabinet: Cabinet) -> None:
    clock.advance(RECEIVE_PHYSICS_LAG_S)
    cabinet.receive(IDENTIFY)
    assert cabinet.timeline.physics_time == cabinet.now
    assert all(board.physics_time == cabinet.now for board in cabinet.boards.values())


def test_update_integrates_to_now(clock: ManualClock, cabinet: Cabinet) -> None:
    clock.advance(0.01)
    cabinet.receive(IDENTIFY)
    cabinet.update()
    assert cabinet.timeline.physics_time == cabinet.now == 0.01
    assert cabinet.board(2).physics_time == 0.01


def _poll_until(clock: ManualClock, cabinet: Cabinet, until: float, step_s: float) -> None:
    """Move time only through received requests, as a master polling every `step_s` does."""
    while clock.now() < until:
        clock.advance(step_s)
        cabinet.receive(IDENTIFY)


def _events(master: Master, kind: EventKind) -> list[BoardEvent]:
    return [event for event in master.drain_events(1) if event.kind is kind]


def test_debounce_and_window_keep_instants() -> None:
    clock = ManualClock()
    cabinet = Cabinet(empty_config(), clock=clock)
    master = Master(cabinet)
    master.drain_events(1)
    cabinet.insert_bank(1)
    _poll_until(clock, cabinet, 0.5, step_s=0.013)
    inserted = _events(master, EventKind.BANK_INSERTED)
    assert [event.uptime_ms for event in inserted] == [200]

    opened_at = cabinet.now
    master.call(1, Command.UNLOCK, UnlockRequest(1, 5, 77))
    _poll_until(clock, cabinet, opened_at + 5.5, step_s=0.013)
    not_taken = _events(master, EventKind.UNLOCK_NOT_TAKEN)
    assert [event.uptime_ms for event in not_taken] == [round((opened_at + 5) * 1000)]


def _hot_cabinet() -> tuple[ManualClock, Cabinet, Master]:
    """A charging bank 1 degC below the overheat threshold that heats towards 87 degC."""
    clock = ManualClock()
    cabinet = Cabinet(empty_config(boards=1), clock=clock)
    bank = cabinet.insert_bank(1, charge=20)
    cabinet.advance(0.3)
    bank.extra_heating_c = 50.0
    cabinet.set_temperature(1, cabinet.config.charging.overheat_c - 1)
    master = Master(cabinet)
    master.drain_events(1)
    return clock, cabinet, master


def test_overheat_threshold_within_lag() -> None:
    step_s = 0.02
    clock, advanced, reference = _hot_cabinet()
    while not _events(reference, EventKind.OVERHEAT):
        advanced.advance(step_s)
    expected_s = advanced.now

    clock, polled, master = _hot_cabinet()
    _poll_until(clock, polled, expected_s + 2 * RECEIVE_PHYSICS_LAG_S, step_s)
    overheat = _events(master, EventKind.OVERHEAT)
    assert len(overheat) == 1
    latched_s = overheat[0].uptime_ms / 1000
    assert expected_s - step_s <= latched_s <= expected_s + RECEIVE_PHYSICS_LAG_S + step_s


def test_bank_data_within_lag() -> None:
    clock, polled, master = _hot_cabinet()
    _, reference, reference_master = _hot_cabinet()
    _poll_until(clock, polled, 3.0, step_s=0.03)
    reference.advance(polled.now)
    data = master.call(1, Command.GET_BANK, SlotRef(1))
    expected = reference_master.call(1, Command.GET_BANK, SlotRef(1))
    assert isinstance(data, BankData)
    assert isinstance(expected, BankData)
    assert abs(data.temperature_dc - expected.temperature_dc) <= 1
    assert abs(data.voltage_mv - expected.voltage_mv) <= 1
    assert data.charge == expected.charge


def test_fresh_return_reads_inserted_charge() -> None:
    # Right after the debounce the bank has charged for a moment, so a charge of 42.0 reads 42
    # and not 41 from the self-discharge of the debounce time.
    clock = ManualClock()
    cabinet = Cabinet(empty_config(), clock=clock)
    master = Master(cabinet)
    master.drain_events(1)
    cabinet.insert_bank(1, charge=42.0)
    _poll_until(clock, cabinet, 0.205, step_s=0.001)
    assert [event.kind for event in master.drain_events(1)] == [EventKind.BANK_INSERTED]
    data = master.call(1, Command.GET_BANK, SlotRef(1))
    assert isinstance(data, BankData)
    assert data.charge == 42


def test_request_syncs_addressed_board() -> None:
    clock = ManualClock()
    switched = Cabinet(empty_config(boards=2), clock=clock)
    reference = Cabinet(empty_config(boards=2), clock=ManualClock())
    for cabinet in (switched, reference):
        cabinet.insert_bank(1, charge=20, capacity_mah=5000)
        cabinet.advance(0.3)

    clock.advance(0.04)
    switched.receive(IDENTIFY_BOARD_2)
    assert switched.board(1).physics_time < switched.now
    Master(switched).call(1, Command.SET_CHARGING, ChargingRequest(1, False))
    assert switched.board(1).physics_time == switched.now

    reference.advance(0.04)
    Master(reference).call(1, Command.SET_CHARGING, ChargingRequest(1, False))
    for cabinet in (switched, reference):
        cabinet.advance(10)
    switched_bank = switched.slot(1).bank
    reference_bank = reference.slot(1).bank
    assert switched_bank is not None
    assert reference_bank is not None
    assert switched_bank.charge == reference_bank.charge
