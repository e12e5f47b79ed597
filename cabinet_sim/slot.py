"""One slot of a board: what is physically there, and what the board's sensors report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cabinet_sim.bank import Bank
from protocol.slotbus.codes import ChargingState, LockState, SelfTestCheck, SlotFault, SlotFlag
from protocol.slotbus.constants import CHARGE_UNKNOWN
from protocol.slotbus.messages import NO_BANK_ID, SlotStatus


class InjectedFault(StrEnum):
    """Hardware faults that the simulator can switch on for a slot."""

    LOCK_STUCK = "lock_stuck"  # the lock does not open when released
    LOCK_NOT_RETURNED = "lock_not_returned"  # the solenoid does not return after a window
    LOCK_SENSOR = "lock_sensor"
    CONTACTS = "contacts"  # pogo pins do not touch: no id, no data, no charging
    CHARGER = "charger"
    TEMPERATURE_SENSOR = "temperature_sensor"


SELF_TEST_CHECKS: dict[InjectedFault, SelfTestCheck] = {
    InjectedFault.LOCK_STUCK: SelfTestCheck.LOCK_ACTUATOR,
    InjectedFault.LOCK_NOT_RETURNED: SelfTestCheck.LOCK_ACTUATOR,
    InjectedFault.LOCK_SENSOR: SelfTestCheck.LOCK_SENSOR,
    InjectedFault.CONTACTS: SelfTestCheck.CONTACTS,
    InjectedFault.CHARGER: SelfTestCheck.CHARGER,
    InjectedFault.TEMPERATURE_SENSOR: SelfTestCheck.TEMPERATURE_SENSOR,
}

LIVE_FAULTS: dict[InjectedFault, SlotFault] = {
    InjectedFault.LOCK_SENSOR: SlotFault.SENSOR,
    InjectedFault.TEMPERATURE_SENSOR: SlotFault.SENSOR,
    InjectedFault.CONTACTS: SlotFault.CONTACT,
    InjectedFault.CHARGER: SlotFault.CHARGER,
}
"""Faults a board notices continuously, shown for as long as they are switched on."""


@dataclass(frozen=True, slots=True)
class TakeWindow:
    token: int
    ends_at: float
    bank_id: bytes  # the bank identified in the slot when the lock opened, or NO_BANK_ID


@dataclass(frozen=True, slots=True)
class PresenceView:
    """The presence part of a slot's status, frozen while the sensors settle after an eject."""

    flags: SlotFlag
    charge: int
    bank_id: bytes


@dataclass(slots=True)
class Slot:
    number: int
    bank: Bank | None = None
    seated: bool = True  # pushed fully in
    backwards: bool = False
    detected: bool = False
    """Presence as the board reports it, after the switch was stable for the debounce time."""
    insert_count: int = 0  # changes with every physical insertion or removal
    lock: LockState = LockState.LOCKED
    window: TakeWindow | None = None
    latched_faults: SlotFault = field(default_factory=lambda: SlotFault(0))
    injected: set[InjectedFault] = field(default_factory=set)
    charging_enabled: bool = True
    charging: ChargingState = ChargingState.IDLE
    topped_up: bool = False  # the charger finished; restart only below the recharge level
    overheated: bool = False
    settled_at: float = 0.0
    stale_view: PresenceView | None = None

    @property
    def contacts_made(self) -> bool:
        return (
            self.bank is not None
            and self.seated
            and not self.backwards
            and InjectedFault.CONTACTS not in self.injected
        )

    @property
    def id_readable(self) -> bool:
        return self.contacts_made and self.bank is not None and self.bank.readable

    @property
    def visible_id(self) -> bytes:
        """The bank id the board can read, or NO_BANK_ID."""
        if self.detected and self.id_readable and self.bank is not None:
            return self.bank.bank_id
        return NO_BANK_ID

    @property
    def faults(self) -> SlotFault:
        faults = self.latched_faults
        for injected in self.injected:
            faults |= LIVE_FAULTS.get(injected, SlotFault(0))
        if self.overheated:
            faults |= SlotFault.OVERHEAT
        if self.detected and not self.id_readable:
            faults |= SlotFault.ID_READ
        return faults

    def presence_view(self) -> PresenceView:
        if not self.detected or self.bank is None:
            return PresenceView(SlotFlag(0), 0, NO_BANK_ID)
        flags = SlotFlag.BANK_PRESENT
        if self.contacts_made:
            flags |= SlotFlag.BANK_SEATED
        if self.id_readable:
            flags |= SlotFlag.ID_VALID
            return PresenceView(flags, self.bank.charge_percent, self.bank.bank_id)
        return PresenceView(flags, CHARGE_UNKNOWN, NO_BANK_ID)

    def status(self, now: float) -> SlotStatus:
        view = self.presence_view()
        if self.stale_view is not None and now < self.settled_at:
            view = self.stale_view
        flags = view.flags
        if self.window is not None:
            flags |= SlotFlag.TAKE_WINDOW
        lock = LockState.FAULT if InjectedFault.LOCK_SENSOR in self.injected else self.lock
        return SlotStatus(
            slot=self.number,
            flags=flags,
            lock=lock,
            charging=self.charging,
            charge=view.charge,
            bank_id=view.bank_id,
            faults=self.faults,
        )

    def self_test_failures(self) -> SelfTestCheck:
        failed = SelfTestCheck(0)
        for injected in self.injected:
            failed |= SELF_TEST_CHECKS[injected]
        return failed

    def wants_charge(self, recharge_below: float) -> bool:
        """Return whether the bank needs charging, ignoring the board's limit and any cutoff."""
        if not self.detected or not self.id_readable or self.bank is None:
            return False
        if self.topped_up:
            return self.bank.charge < recharge_below
        return True
