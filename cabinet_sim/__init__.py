"""Cabinet simulator: slot boards on an RS-485 bus, speaking slot-bus like real hardware."""

from cabinet_sim.bank import Bank
from cabinet_sim.board import Board
from cabinet_sim.cabinet import Cabinet, LinkFaults, Transmission
from cabinet_sim.clock import Clock, ManualClock, MonotonicClock
from cabinet_sim.config import BankMix, ChargingConfig, FaultRates, SimConfig, SlotAddress
from cabinet_sim.hardware import PRESENCE_DEBOUNCE_S, REBOOT_S, SimulationError
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.slot import InjectedFault, Slot

__all__ = [
    "PRESENCE_DEBOUNCE_S",
    "REBOOT_S",
    "Bank",
    "BankMix",
    "Board",
    "Cabinet",
    "ChargingConfig",
    "Clock",
    "FaultRates",
    "InjectedFault",
    "LinkFaults",
    "ManualClock",
    "MonotonicClock",
    "Notice",
    "NoticeKind",
    "SimConfig",
    "SimulationError",
    "Slot",
    "SlotAddress",
    "Transmission",
]
