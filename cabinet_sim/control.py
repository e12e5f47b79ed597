"""Text commands that act on a running cabinet: typed on stdin, sent to the control socket,
or listed with times in a scenario file. One command per line; `help` lists them."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import ClassVar

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.hardware import SimulationError
from cabinet_sim.slot import InjectedFault
from protocol.slotbus.messages import bank_id_from_hex, bank_id_hex

HELP = """\
insert SLOT [id=HEX] [charge=PERCENT] [capacity=MAH] [loose] [backwards] [unreadable]
remove SLOT            pull the bank out of an open slot
take SLOT              take the bank during its take window
open SLOT              force the latch open without an unlock (tamper)
tamper SLOT            force the latch open and pull the bank out
fault SLOT KIND [on|off]   KIND: lock_stuck lock_not_returned lock_sensor contacts charger
                           temperature_sensor
temp SLOT CELSIUS      set the temperature of the bank in SLOT
charge SLOT PERCENT    set the charge of the bank in SLOT
hot SLOT CELSIUS       the bank in SLOT runs this much hotter while charging
board ADDRESS silent|answer|reboot
link corrupt RATE | drop RATE | late RATE [DELAY_S] | echo on|off
port down [SECONDS] | port up
advance SECONDS        move a manual clock forward
status [SLOT]
help"""


class ControlError(Exception):
    """A control command that is invalid or cannot be carried out, with the reason."""


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ControlError(f"{what} must be an integer, not {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ControlError(f"{what} must be a number, not {text!r}") from None


def _switch(text: str) -> bool:
    if text in ("on", "1", "yes", "true"):
        return True
    if text in ("off", "0", "no", "false"):
        return False
    raise ControlError(f"expected on or off, not {text!r}")


class Controller:
    """Carries out control commands on `cabinet` and returns a one-line (or table) reply."""

    NAMES: ClassVar[frozenset[str]] = frozenset(
        {
            *("insert", "remove", "take", "open", "tamper", "fault", "temp", "charge", "hot"),
            *("board", "link", "port", "advance", "status", "help"),
        }
    )

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self._commands: dict[str, Callable[[list[str]], str]] = {
            "insert": self._insert,
            "remove": self._remove,
            "take": self._take,
            "open": self._open,
            "tamper": self._tamper,
            "fault": self._fault,
            "temp": self._temperature,
            "charge": self._charge,
            "hot": self._hot,
            "board": self._board,
            "link": self._link,
            "port": self._port,
            "advance": self._advance,
            "status": self._status,
            "help": lambda _: HELP,
        }

    def execute(self, line: str) -> str:
        """Run one command line; raise ControlError with a message for the user."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ControlError(f"cannot parse {line!r}: {exc}") from None
        if not words:
            return ""
        name, arguments = words[0].lower(), words[1:]
        command = self._commands.get(name)
        if command is None:
            raise ControlError(f"unknown command {name!r}; type help for the list")
        self.cabinet.update()
        try:
            return command(arguments)
        except SimulationError as exc:
            raise ControlError(str(exc)) from None
        except IndexError:
            raise ControlError(f"missing argument for {name}; type help for the usage") from None

    def _slot(self, arguments: list[str]) -> int:
        return _int(arguments[0], "SLOT")

    def _insert(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        options: dict[str, str] = {}
        flags: set[str] = set()
        for word in arguments[1:]:
            key, separator, value = word.partition("=")
            if separator:
                options[key] = value
            else:
                flags.add(word)
        unknown = flags - {"loose", "backwards", "unreadable"}
        unknown |= set(options) - {"id", "charge", "capacity"}
        if unknown:
            raise ControlError(f"unknown insert options {sorted(unknown)}")
        try:
            bank_id = bank_id_from_hex(options["id"]) if "id" in options else None
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        bank = self.cabinet.insert_bank(
            slot,
            bank_id=bank_id,
            charge=_float(options["charge"], "charge") if "charge" in options else None,
            capacity_mah=_int(options["capacity"], "capacity") if "capacity" in options else None,
            seated="loose" not in flags,
            backwards="backwards" in flags,
            readable="unreadable" not in flags,
        )
        return f"inserted bank {bank_id_hex(bank.bank_id)} into slot {slot}"

    def _remove(self, arguments: list[str]) -> str:
        bank = self.cabinet.remove_bank(self._slot(arguments))
        return f"removed bank {bank_id_hex(bank.bank_id)}"

    def _take(self, arguments: list[str]) -> str:
        bank = self.cabinet.take(self._slot(arguments))
        return f"took bank {bank_id_hex(bank.bank_id)}"

    def _open(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        self.cabinet.force_open(slot)
        return f"slot {slot} forced open"

    def _tamper(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        bank = self.cabinet.tamper(slot)
        stolen = f"bank {bank_id_hex(bank.bank_id)} pulled out" if bank else "slot was empty"
        return f"slot {slot} forced open, {stolen}"

    def _fault(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        try:
            fault = InjectedFault(arguments[1])
        except ValueError:
            kinds = " ".join(kind.value for kind in InjectedFault)
            raise ControlError(f"unknown fault {arguments[1]!r}; one of: {kinds}") from None
        active = _switch(arguments[2]) if len(arguments) > 2 else True
        self.cabinet.set_fault(slot, fault, active)
        return f"slot {slot}: {fault.value} {'on' if active else 'off'}"

    def _temperature(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        celsius = _float(arguments[1], "CELSIUS")
        self.cabinet.set_temperature(slot, celsius)
        return f"slot {slot}: bank at {celsius:.1f} degC"

    def _charge(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        percent = _float(arguments[1], "PERCENT")
        self.cabinet.set_charge(slot, percent)
        return f"slot {slot}: bank at {percent:.0f} %"

    def _hot(self, arguments: list[str]) -> str:
        slot = self._slot(arguments)
        bank = self.cabinet.slot(slot).bank
        if bank is None:
            raise ControlError(f"slot {slot} is empty")
        bank.extra_heating_c = _float(arguments[1], "CELSIUS")
        return f"slot {slot}: bank runs {bank.extra_heating_c:.1f} degC hotter while charging"

    def _board(self, arguments: list[str]) -> str:
        address = _int(arguments[0], "ADDRESS")
        action = arguments[1]
        if action == "silent":
            self.cabinet.set_board_silent(address, True)
        elif action == "answer":
            self.cabinet.set_board_silent(address, False)
        elif action == "reboot":
            self.cabinet.power_cycle(address)
        else:
            raise ControlError(
                f"unknown board action {action!r}; use silent, answer (respond again) or reboot"
            )
        return f"board {address}: {action}"

    def _link(self, arguments: list[str]) -> str:
        link = self.cabinet.link
        what = arguments[0]
        if what == "echo":
            link.local_echo = _switch(arguments[1])
            return f"local echo {'on' if link.local_echo else 'off'}"
        rate = _float(arguments[1], "RATE")
        if not 0 <= rate <= 1:
            raise ControlError(f"RATE must be in 0..1, not {rate}")
        if what == "corrupt":
            link.corrupt_byte_rate = rate
        elif what == "drop":
            link.drop_response_rate = rate
        elif what == "late":
            link.late_response_rate = rate
            if len(arguments) > 2:
                link.late_response_delay_s = _float(arguments[2], "DELAY_S")
        else:
            raise ControlError(f"unknown link fault {what!r}; use corrupt, drop, late or echo")
        return f"link {what} rate {rate}"

    def _port(self, arguments: list[str]) -> str:
        if arguments[0] == "down":
            duration = _float(arguments[1], "SECONDS") if len(arguments) > 1 else None
            self.cabinet.port_down(duration)
            return "port down" + (f" for {duration} s" if duration is not None else "")
        if arguments[0] == "up":
            self.cabinet.port_up()
            return "port up"
        raise ControlError(f"unknown port action {arguments[0]!r}; use down or up")

    def _advance(self, arguments: list[str]) -> str:
        seconds = _float(arguments[0], "SECONDS")
        self.cabinet.advance(seconds)
        return f"time {self.cabinet.now:.1f} s"

    def _status(self, arguments: list[str]) -> str:
        numbers = [self._slot(arguments)] if arguments else range(1, self.cabinet.slot_count + 1)
        lines = []
        for number in numbers:
            slot = self.cabinet.slot(number)
            where = self.cabinet.locate(number)
            bank = slot.bank
            bank_text = "-" if bank is None else f"{bank_id_hex(bank.bank_id)} {bank.charge:5.1f}%"
            lines.append(
                f"{number:2d} b{where.board}/{where.slot} {slot.lock.name:8s} "
                f"{slot.charging.name:8s} {bank_text} faults={int(slot.faults):#06x}"
            )
        return "\n".join(lines)
