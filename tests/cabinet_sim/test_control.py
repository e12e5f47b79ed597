"""Control commands, as typed on stdin, sent to the control socket or listed in scenarios."""

from __future__ import annotations

import pytest

from cabinet_sim import Cabinet, InjectedFault
from cabinet_sim.control import HELP, ControlError, Controller
from protocol.slotbus import LockState, bank_id_from_hex
from tests.cabinet_sim.conftest import Master


@pytest.fixture
def controller(cabinet: Cabinet) -> Controller:
    return Controller(cabinet)


def test_insert_with_options(cabinet: Cabinet, controller: Controller) -> None:
    reply = controller.execute("insert 3 id=A1B2C3D4 charge=42 capacity=10000 loose unreadable")
    assert reply == "inserted bank 00000000A1B2C3D4 into slot 3"
    slot = cabinet.slot(3)
    assert slot.bank is not None
    assert slot.bank.bank_id == bank_id_from_hex("A1B2C3D4")
    assert slot.bank.charge == 42
    assert slot.bank.capacity_mah == 10000
    assert not slot.seated
    assert not slot.bank.readable
    controller.execute("insert 4 backwards")
    assert cabinet.slot(4).backwards


def test_take_tamper_and_open(cabinet: Cabinet, controller: Controller, master: Master) -> None:
    controller.execute("insert 1")
    controller.execute("insert 2")
    with pytest.raises(ControlError, match="no take window"):
        controller.execute("take 1")
    assert "pulled out" in controller.execute("tamper 1")
    controller.execute("open 2")
    assert cabinet.slot(2).lock is LockState.OPEN
    assert controller.execute("remove 2").startswith("removed bank")


def test_faults_and_board_actions(cabinet: Cabinet, controller: Controller) -> None:
    controller.execute("fault 5 lock_stuck")
    assert cabinet.slot(5).injected == {InjectedFault.LOCK_STUCK}
    controller.execute("fault 5 lock_stuck off")
    assert not cabinet.slot(5).injected
    controller.execute("board 2 silent")
    assert cabinet.board(2).silent
    controller.execute("board 2 answer")
    assert not cabinet.board(2).silent
    controller.execute("board 3 reboot")
    assert cabinet.board(3).boot_count == 2


def test_link_and_port(cabinet: Cabinet, controller: Controller) -> None:
    controller.execute("link corrupt 0.01")
    controller.execute("link drop 0.2")
    controller.execute("link late 0.3 0.5")
    controller.execute("link echo on")
    link = cabinet.link
    assert (link.corrupt_byte_rate, link.drop_response_rate) == (0.01, 0.2)
    assert (link.late_response_rate, link.late_response_delay_s) == (0.3, 0.5)
    assert link.local_echo
    controller.execute("port down 2")
    assert not cabinet.port_online
    controller.execute("advance 2")
    assert cabinet.port_online


def test_temperature_and_charge(cabinet: Cabinet, controller: Controller) -> None:
    controller.execute("insert 1")
    controller.execute("temp 1 61")
    controller.execute("charge 1 12")
    controller.execute("hot 1 30")
    bank = cabinet.slot(1).bank
    assert bank is not None
    assert (bank.temperature_c, bank.charge, bank.extra_heating_c) == (61, 12, 30)


def test_status_and_help(cabinet: Cabinet, controller: Controller) -> None:
    assert len(controller.execute("status").splitlines()) == 24
    assert controller.execute("status 7").startswith(" 7 b2/1 LOCKED")
    assert controller.execute("help") == HELP
    assert controller.execute("   ") == ""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("explode 1", "unknown command"),
        ("insert", "missing argument"),
        ("insert x", "SLOT must be an integer"),
        ("insert 99", "outside 1..24"),
        ("insert 1 colour=red", "unknown insert options"),
        ("insert 1 id=12", "4 to 8 bytes"),
        ("fault 1 fire", "unknown fault"),
        ("fault 1 charger maybe", "expected on or off"),
        ("link corrupt 2", "RATE must be in 0..1"),
        ("link noise 0.1", "unknown link fault"),
        ("board 9 silent", "no board at address 9"),
        ("board 1 dance", "unknown board action"),
        ("port sideways", "unknown port action"),
        ("temp 1 30", "empty"),
        ("charge 1 x", "PERCENT must be a number"),
        ('insert "1', "cannot parse"),
    ],
)
def test_invalid_commands(controller: Controller, line: str, message: str) -> None:
    with pytest.raises(ControlError, match=message):
        controller.execute(line)


def test_names_match_commands(controller: Controller) -> None:
    assert set(controller._commands) == Controller.NAMES
