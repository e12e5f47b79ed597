"""Charging physics of the simulator within stated bounds, the per-board limit and overheat."""

from __future__ import annotations

import pytest

from cabinet_sim import Cabinet, ChargingConfig, InjectedFault, ManualClock
from cabinet_sim.bank import Bank, charging_current_ma
from protocol.slotbus import (
    BankData,
    ChargingState,
    Command,
    EventKind,
    SlotFault,
    SlotRef,
)
from tests.cabinet_sim.conftest import Master, empty_config

PHYSICS = ChargingConfig()


def test_constant_current_rate(cabinet: Cabinet) -> None:
    bank = cabinet.insert_bank(1, charge=20, capacity_mah=5000)
    cabinet.advance(0.3)
    cabinet.advance(1800)
    # 2000 mA for half an hour into 5000 mAh is 20 % of charge, minus a little self-discharge.
    assert 39.0 <= bank.charge <= 40.1


def test_taper_and_full(cabinet: Cabinet) -> None:
    bank = cabinet.insert_bank(1, charge=79, capacity_mah=5000)
    cabinet.advance(0.3)
    assert cabinet.slot(1).charging is ChargingState.CHARGING
    cabinet.advance(300)
    assert cabinet.slot(1).charging is ChargingState.TOPPING
    assert 0 < bank.current_ma < PHYSICS.constant_current_ma
    cabinet.advance(4 * 3600)
    assert bank.charge > 99.9  # full, minus a few hours of self-discharge
    assert cabinet.slot(1).charging is ChargingState.FULL
    assert bank.current_ma == 0


def test_current_curve() -> None:
    assert charging_current_ma(10, PHYSICS) == PHYSICS.constant_current_ma
    assert charging_current_ma(90, PHYSICS) == pytest.approx(PHYSICS.constant_current_ma / 2)
    assert charging_current_ma(100, PHYSICS) == 0


def test_full_bank_recharges_below_threshold(cabinet: Cabinet) -> None:
    bank = cabinet.insert_bank(1, charge=99.9)
    cabinet.advance(600)
    assert cabinet.slot(1).charging is ChargingState.FULL
    bank.charge = PHYSICS.recharge_below_percent - 1
    cabinet.advance(1)
    assert cabinet.slot(1).charging is ChargingState.TOPPING


def test_limit_per_board(cabinet: Cabinet) -> None:
    for slot in range(1, 5):
        cabinet.insert_bank(slot, charge=10)
    cabinet.advance(0.3)
    cabinet.advance(1)
    states = [cabinet.slot(slot).charging for slot in range(1, 5)]
    assert states.count(ChargingState.CHARGING) == PHYSICS.max_per_board
    assert states.count(ChargingState.WAITING) == 4 - PHYSICS.max_per_board
    waiting = states.index(ChargingState.WAITING) + 1
    # Taking a charging bank lets a waiting one start.
    charging = states.index(ChargingState.CHARGING) + 1
    cabinet.force_open(charging)
    cabinet.remove_bank(charging)
    cabinet.advance(1)
    assert cabinet.slot(waiting).charging is ChargingState.CHARGING


def test_temperature_rises_and_falls(cabinet: Cabinet) -> None:
    bank = cabinet.insert_bank(1, charge=10)
    cabinet.advance(3600)
    hot = bank.temperature_c
    limit = PHYSICS.ambient_c + PHYSICS.heating_c_at_full_current
    assert PHYSICS.ambient_c + 8 < hot <= limit
    cabinet.set_charge(1, 100)
    cabinet.slot(1).topped_up = True
    cabinet.advance(3600)
    assert bank.temperature_c < PHYSICS.ambient_c + 1


def test_overheat_cutoff_and_clear(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1, charge=30)
    cabinet.advance(0.3)
    master.drain_events(1)
    cabinet.set_temperature(1, 60.5)
    cabinet.advance(1)
    assert cabinet.slot(1).charging is ChargingState.CUTOFF
    assert cabinet.slot(1).faults & SlotFault.OVERHEAT
    events = master.drain_events(1)
    assert [e.kind for e in events] == [EventKind.OVERHEAT]
    assert 600 <= events[0].value <= 606
    cabinet.advance(60)
    assert cabinet.slot(1).charging is ChargingState.CUTOFF
    cabinet.set_temperature(1, 44.9)
    cabinet.advance(1)
    assert cabinet.slot(1).charging is ChargingState.CHARGING
    assert not cabinet.slot(1).faults & SlotFault.OVERHEAT
    assert master.drain_events(1) == []


def test_overheat_threshold_is_strict(clock: ManualClock) -> None:
    # With a 60 degC ambient and charging off, the bank stays at exactly 60.0 degC.
    config = empty_config(charging=ChargingConfig(ambient_c=60.0))
    cabinet = Cabinet(config, clock=clock)
    cabinet.insert_bank(1, charge=30)
    cabinet.slot(1).charging_enabled = False
    cabinet.advance(10)
    assert not cabinet.slot(1).overheated
    cabinet.set_temperature(1, 60.1)
    cabinet.advance(1)
    assert cabinet.slot(1).overheated


def test_hot_bank_heats_itself_to_cutoff(cabinet: Cabinet, master: Master) -> None:
    bank = cabinet.insert_bank(1, charge=10)
    bank.extra_heating_c = 40
    cabinet.advance(3600)
    assert cabinet.slot(1).overheated or any(
        e.kind is EventKind.OVERHEAT for e in master.drain_events(1)
    )


def test_charger_fault_cuts_off(cabinet: Cabinet) -> None:
    cabinet.insert_bank(1, charge=30)
    cabinet.set_fault(1, InjectedFault.CHARGER)
    cabinet.advance(1)
    assert cabinet.slot(1).charging is ChargingState.CUTOFF
    assert cabinet.slot(1).faults & SlotFault.CHARGER


def test_unidentified_bank_not_charged(cabinet: Cabinet) -> None:
    bank = cabinet.insert_bank(1, charge=30, readable=False)
    cabinet.advance(600)
    assert cabinet.slot(1).charging is ChargingState.IDLE
    assert bank.charge <= 30


def test_self_discharge_at_rest() -> None:
    bank = Bank(bytes(7) + b"\x01", 5000, 50.0)
    bank.advance(10 * 86_400, 0.0, PHYSICS)
    assert bank.charge == pytest.approx(50 - 10 * PHYSICS.self_discharge_percent_per_day)


def test_cycles_and_health() -> None:
    bank = Bank(bytes(7) + b"\x01", 5000, 0.0)
    for _ in range(3):
        bank.advance(3600 * 2.5, 2000.0, PHYSICS)
        bank.charge = 0.0
    assert bank.cycles == 3
    assert bank.health == pytest.approx(100 - 3 * 0.02)


def test_bank_data_reports_physics(cabinet: Cabinet, master: Master) -> None:
    cabinet.insert_bank(1, charge=30)
    cabinet.advance(120)
    data = master.call(1, Command.GET_BANK, SlotRef(1))
    assert isinstance(data, BankData)
    assert data.current_ma == PHYSICS.constant_current_ma
    assert 250 <= data.temperature_dc <= 300


def test_max_charging_configurable(clock: ManualClock) -> None:
    config = empty_config(charging=ChargingConfig(max_per_board=1))
    cabinet = Cabinet(config, clock=clock)
    for slot in (1, 2):
        cabinet.insert_bank(slot, charge=10)
    cabinet.advance(1)
    assert [cabinet.slot(n).charging for n in (1, 2)] == [
        ChargingState.CHARGING,
        ChargingState.WAITING,
    ]
