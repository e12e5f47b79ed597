"""Scenario files: parsing, validation, and timed commands on a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from cabinet_sim import Cabinet, InjectedFault, ManualClock
from cabinet_sim.control import Controller
from cabinet_sim.scenario import EXAMPLES_DIR, Scenario, ScenarioError, parse_duration
from cabinet_sim.users import Users


def test_parse_duration() -> None:
    assert parse_duration("01:02:03") == 3723
    assert parse_duration("02:30") == 150
    assert parse_duration(90) == 90
    assert parse_duration("45.5") == 45.5
    with pytest.raises(ValueError, match="HH:MM:SS"):
        parse_duration("1:2:3:4")


def test_example_scenario_loads() -> None:
    scenario = Scenario.load(EXAMPLES_DIR / "busy_day.toml")
    assert scenario.duration == 12 * 3600
    config = scenario.config()
    assert config.slot_count == 24
    assert config.seed == 2026
    assert scenario.users.returns_per_hour > 0
    assert len(scenario.at) >= 5


def test_overrides_win(tmp_path: Path) -> None:
    scenario = Scenario.load(EXAMPLES_DIR / "busy_day.toml")
    config = scenario.config(boards=2, seed=None)
    assert config.board_addresses() == (1, 2)
    assert config.seed == 2026


def test_invalid_scenarios(tmp_path: Path) -> None:
    cases = {
        "syntax.toml": "name = ",
        "unknown_key.toml": 'colour = "red"',
        "bad_cabinet.toml": "[cabinet]\nboards = 9\nslots_per_board = 12",
        "bad_command.toml": '[[at]]\ntime = 5\ncommand = "explode 3"',
        "bad_time.toml": '[[at]]\ntime = "soon"\ncommand = "status"',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ScenarioError):
            Scenario.load(path)
    with pytest.raises(ScenarioError, match="cannot read"):
        Scenario.load(tmp_path / "missing.toml")


def test_timed_commands_run_in_order(tmp_path: Path) -> None:
    path = tmp_path / "day.toml"
    path.write_text(
        """
name = "test"
[cabinet]
boards = 1
[cabinet.banks]
fill_ratio = 0.0
[[at]]
time = "00:10"
command = "insert 2 charge=40"
[[at]]
time = "00:05"
command = "fault 2 charger on"
[[at]]
time = 20
command = "remove 2"
"""
    )
    scenario = Scenario.load(path)
    clock = ManualClock()
    cabinet = Cabinet(scenario.config(), clock=clock)
    scenario.start(cabinet, Controller(cabinet))
    cabinet.advance(4)
    assert not cabinet.slot(2).injected
    cabinet.advance(2)
    assert cabinet.slot(2).injected == {InjectedFault.CHARGER}
    cabinet.advance(5)
    assert cabinet.slot(2).bank is not None
    # "remove" on a locked slot fails; the failure is logged and the run goes on.
    cabinet.advance(10)
    assert cabinet.slot(2).bank is not None


def test_example_runs_half_a_day() -> None:
    scenario = Scenario.load(EXAMPLES_DIR / "busy_day.toml")
    clock = ManualClock()
    cabinet = Cabinet(scenario.config(physics_step_s=10.0), clock=clock)
    users = Users(cabinet, scenario.users)
    scenario.start(cabinet, Controller(cabinet))
    cabinet.advance(12 * 3600)
    assert users.stats.returned > 0
    assert cabinet.slot(14).backwards
    assert not cabinet.slot(5).injected
