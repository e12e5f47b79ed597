"""The physical side of a slot board: slots, locks, take windows, charging, events, boots.

`Board` (board.py) adds the slot-bus command interface on top of this class.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from cabinet_sim.bank import Bank, charging_current_ma
from cabinet_sim.config import SimConfig
from cabinet_sim.events import EventQueue, TokenCache, TokenRecord
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.slot import InjectedFault, Slot, TakeWindow
from cabinet_sim.timeline import Timeline, TimerHandle
from protocol.slotbus.codes import (
    BootReason,
    ChargingState,
    EventKind,
    InsertFlag,
    LockState,
    SlotFault,
    TokenState,
    UnlockCode,
)
from protocol.slotbus.constants import SETTLE_AFTER_EJECT_S
from protocol.slotbus.messages import NO_BANK_ID

logger = logging.getLogger(__name__)

PRESENCE_DEBOUNCE_S = 0.2
"""The presence switch must be stable this long before a board reports an insertion."""
REBOOT_S = 0.5
"""A board does not respond for this long after a commanded reset or a power cycle."""


class SimulationError(Exception):
    """A physical action that cannot happen, such as removing a bank from a locked slot."""


class BoardHardware:
    def __init__(
        self,
        address: int,
        config: SimConfig,
        timeline: Timeline,
        rng: random.Random,
        notify: Callable[[Notice], None],
    ) -> None:
        self.address = address
        self.config = config
        self.timeline = timeline
        self.rng = rng
        self._notify = notify
        self.slots = {n: Slot(n) for n in range(1, config.slots_per_board + 1)}
        self.events = EventQueue(config.event_capacity)
        self.tokens = TokenCache(config.token_cache_size)
        self.board_id = rng.getrandbits(64) or 1
        self.boot_count = 0
        self.physics_time = timeline.now
        """This board's charge and temperature are integrated up to this instant."""
        self.boot_time = timeline.now
        self.ready_at = timeline.now
        self.silent = False
        """A silent board keeps working but neither reads the bus nor responds."""
        self._window_timers: dict[int, TimerHandle] = {}
        self._charging_order: list[int] = []

    @property
    def now(self) -> float:
        return self.timeline.now

    @property
    def responsive(self) -> bool:
        return not self.silent and self.now >= self.ready_at

    def sync_physics(self) -> None:
        """Integrate this board's physics up to now.

        Physics may lag behind the clock while the master talks (`Cabinet.receive`). A board
        syncs before it handles a request, so that it reports current values, and before a
        reboot, so that the change does not act on the interval that physics has not covered.
        """
        self.integrate_to(self.now)

    def integrate_to(self, until: float) -> None:
        """Integrate this board's physics up to `until`, in steps of at most physics_step_s."""
        while self.physics_time < until:
            target = min(self.physics_time + self.config.physics_step_s, until)
            self.advance(target - self.physics_time)
            self.physics_time = target

    def slot(self, number: int) -> Slot:
        try:
            return self.slots[number]
        except KeyError:
            raise SimulationError(
                f"board {self.address} has slots 1..{len(self.slots)}, not {number}"
            ) from None

    def emit(
        self,
        kind: EventKind,
        *,
        slot: int = 0,
        token: int = 0,
        bank_id: bytes = NO_BANK_ID,
        value: int = 0,
    ) -> None:
        uptime_ms = round((self.now - self.boot_time) * 1000)
        event = self.events.push(
            kind, slot=slot, uptime_ms=uptime_ms, token=token, bank_id=bank_id, value=value
        )
        if event is None:
            logger.debug(
                "board %d: event queue full, %s on slot %d dropped", self.address, kind.name, slot
            )
        self._notify(Notice(NoticeKind.EVENT, self.address, slot, event))

    # Boots

    def boot(self, reason: BootReason, unresponsive_s: float = REBOOT_S) -> None:
        """Restart the firmware: events, tokens and take windows are lost, locks return."""
        self.sync_physics()
        for slot in self.slots.values():
            if slot.window is not None:
                self._cancel_window(slot)
                if InjectedFault.LOCK_NOT_RETURNED not in slot.injected:
                    slot.lock = LockState.LOCKED
            # A reboot forgets latched faults, except what the lock sensor still shows.
            if slot.lock is LockState.LOCKED:
                slot.latched_faults = SlotFault(0)
            else:
                slot.latched_faults &= SlotFault.LOCK_NOT_RETURNED | SlotFault.TAMPER
            slot.stale_view = None
        self.boot_count += 1
        self.boot_time = self.now
        self.ready_at = self.now + unresponsive_s
        self.events.clear()
        self.tokens.clear()
        self._charging_order.clear()
        self.emit(EventKind.BOARD_BOOT, value=reason)
        self._notify(Notice(NoticeKind.BOOTED, self.address, 0))
        logger.info(
            "board %d booted (%s), boot count %d", self.address, reason.name, self.boot_count
        )

    # Physical actions

    def insert(
        self, number: int, bank: Bank, *, seated: bool = True, backwards: bool = False
    ) -> None:
        slot = self.slot(number)
        if slot.bank is not None:
            raise SimulationError(f"slot {number} of board {self.address} already contains a bank")
        slot.bank = bank
        slot.seated = seated
        slot.backwards = backwards
        slot.topped_up = False
        slot.insert_count += 1
        count = slot.insert_count
        self.timeline.schedule_in(PRESENCE_DEBOUNCE_S, lambda: self._insertion_settled(slot, count))

    def place(self, number: int, bank: Bank) -> None:
        """Put a bank in at start-up: seated and detected at once, without an event."""
        slot = self.slot(number)
        slot.bank = bank
        slot.detected = True
        slot.topped_up = bank.charge >= self.config.charging.recharge_below_percent

    def _insertion_settled(self, slot: Slot, count: int) -> None:
        if slot.insert_count != count or slot.bank is None:
            return
        slot.detected = True
        flags = InsertFlag(0)
        if slot.contacts_made:
            flags |= InsertFlag.SEATED
        if slot.id_readable:
            flags |= InsertFlag.ID_VALID
        self.emit(EventKind.BANK_INSERTED, slot=slot.number, bank_id=slot.visible_id, value=flags)
        if not slot.id_readable:
            self.emit(EventKind.ID_READ_FAILED, slot=slot.number)

    def remove(self, number: int) -> Bank:
        """Pull the bank out; only possible while the latch is open."""
        slot = self.slot(number)
        bank = slot.bank
        if bank is None:
            raise SimulationError(f"slot {number} of board {self.address} is empty")
        if slot.lock is LockState.LOCKED:
            raise SimulationError(
                f"slot {number} of board {self.address} is locked; force it open first (tamper)"
            )
        bank_id = slot.visible_id
        was_detected = slot.detected
        slot.bank = None
        slot.detected = False
        slot.seated = True
        slot.backwards = False
        slot.insert_count += 1
        slot.charging = ChargingState.IDLE
        slot.overheated = False
        bank.current_ma = 0.0
        if not was_detected:
            return bank
        window = slot.window
        if window is not None:
            taken_id = bank_id if bank_id != NO_BANK_ID else window.bank_id
            self._finish_token(window.token, TokenState.TAKEN)
            self.emit(EventKind.UNLOCK_TAKEN, slot=number, token=window.token, bank_id=taken_id)
            self._close_window(slot)
        else:
            self.emit(EventKind.BANK_REMOVED, slot=number, bank_id=bank_id)
        return bank

    def force_open(self, number: int) -> None:
        """Force the latch open without an unlock, as a thief or a vandal does."""
        slot = self.slot(number)
        if slot.lock is not LockState.LOCKED:
            raise SimulationError(f"slot {number} of board {self.address} is already open")
        slot.lock = LockState.OPEN
        slot.latched_faults |= SlotFault.TAMPER
        self.emit(EventKind.SLOT_OPENED, slot=number, bank_id=slot.visible_id)

    def set_fault(self, number: int, fault: InjectedFault, active: bool = True) -> None:
        slot = self.slot(number)
        if active:
            slot.injected.add(fault)
        else:
            slot.injected.discard(fault)

    # Locks and take windows

    def open_lock(self, number: int, token: int, window_s: int) -> UnlockCode:
        """Release the lock of an accepted unlock and start its take window."""
        slot = self.slot(number)
        bank_id = slot.visible_id
        faults = self.config.faults
        stuck = (
            InjectedFault.LOCK_STUCK in slot.injected or self.rng.random() < faults.lock_stuck_rate
        )
        if stuck:
            slot.latched_faults |= SlotFault.LOCK_STUCK
            self.tokens.add(
                token, TokenRecord(number, UnlockCode.LOCK_FAULT, TokenState.LOCK_FAULT, bank_id)
            )
            self.emit(
                EventKind.UNLOCK_LOCK_FAULT,
                slot=number,
                token=token,
                bank_id=bank_id,
                value=SlotFault.LOCK_STUCK,
            )
            return UnlockCode.LOCK_FAULT

        slot.latched_faults &= ~SlotFault.LOCK_STUCK
        if self.config.stale_status_after_eject:
            slot.stale_view = slot.presence_view()
            slot.settled_at = self.now + SETTLE_AFTER_EJECT_S
        slot.lock = LockState.OPEN
        slot.window = TakeWindow(token, self.now + window_s, bank_id)
        self.tokens.add(
            token, TokenRecord(number, UnlockCode.OPENED, TokenState.WINDOW_OPEN, bank_id)
        )
        self._window_timers[number] = self.timeline.schedule_in(
            window_s, lambda: self._window_expired(slot, token)
        )
        self._notify(Notice(NoticeKind.WINDOW_OPENED, self.address, number))
        return UnlockCode.OPENED

    def lock_slot(self, number: int) -> bool:
        """Drive the latch closed; return False when the solenoid cannot return.

        A running take window ends early, with the terminal event it would get at its end.
        """
        slot = self.slot(number)
        if slot.window is not None:
            self._window_expired(slot, slot.window.token)
            return slot.lock is LockState.LOCKED
        if InjectedFault.LOCK_NOT_RETURNED in slot.injected:
            slot.latched_faults |= SlotFault.LOCK_NOT_RETURNED
            return False
        slot.lock = LockState.LOCKED
        slot.latched_faults &= ~(SlotFault.LOCK_NOT_RETURNED | SlotFault.TAMPER)
        return True

    def _window_expired(self, slot: Slot, token: int) -> None:
        window = slot.window
        if window is None or window.token != token:
            return
        self._finish_token(token, TokenState.NOT_TAKEN)
        self.emit(EventKind.UNLOCK_NOT_TAKEN, slot=slot.number, token=token, bank_id=window.bank_id)
        self._close_window(slot)

    def _finish_token(self, token: int, state: TokenState) -> None:
        record = self.tokens.get(token)
        if record is not None:
            record.state = state

    def _close_window(self, slot: Slot) -> None:
        self._cancel_window(slot)
        returned = (
            InjectedFault.LOCK_NOT_RETURNED not in slot.injected
            and self.rng.random() >= self.config.faults.lock_not_returned_rate
        )
        if returned:
            slot.lock = LockState.LOCKED
        else:
            slot.latched_faults |= SlotFault.LOCK_NOT_RETURNED
            self.emit(EventKind.LOCK_NOT_RETURNED, slot=slot.number)
        self._notify(Notice(NoticeKind.WINDOW_CLOSED, self.address, slot.number))

    def _cancel_window(self, slot: Slot) -> None:
        slot.window = None
        timer = self._window_timers.pop(slot.number, None)
        if timer is not None:
            timer.cancel()

    # Charging and temperature

    def advance(self, seconds: float) -> None:
        physics = self.config.charging
        self.update_charging()
        for slot in self.slots.values():
            bank = slot.bank
            if bank is None:
                continue
            current = 0.0
            if slot.charging in (ChargingState.CHARGING, ChargingState.TOPPING):
                current = charging_current_ma(bank.charge, physics)
                if bank.charge >= physics.cv_start_percent and current < physics.min_current_ma:
                    bank.charge = 100.0
                    slot.topped_up = True
                    current = 0.0
            bank.advance(seconds, current, physics)
            if slot.contacts_made and slot.detected:
                self._check_temperature(slot, bank)

    def _check_temperature(self, slot: Slot, bank: Bank) -> None:
        physics = self.config.charging
        if not slot.overheated and bank.temperature_c > physics.overheat_c:
            slot.overheated = True
            self.emit(
                EventKind.OVERHEAT,
                slot=slot.number,
                bank_id=slot.visible_id,
                value=round(bank.temperature_c * 10),
            )
            self.update_charging()
        elif slot.overheated and bank.temperature_c < physics.overheat_clear_c:
            slot.overheated = False
            self.update_charging()

    def update_charging(self) -> None:
        """Set every slot's charging state, keeping at most max_per_board banks charging."""
        physics = self.config.charging
        candidates: list[Slot] = []
        for slot in self.slots.values():
            blocked = self._blocked_charging_state(slot)
            if blocked is None:
                candidates.append(slot)
            else:
                slot.charging = blocked
        wanted = {slot.number for slot in candidates}
        active = [number for number in self._charging_order if number in wanted]
        for slot in candidates:
            if slot.number not in active and len(active) < physics.max_per_board:
                active.append(slot.number)
        self._charging_order = active
        for slot in candidates:
            if slot.number not in active:
                slot.charging = ChargingState.WAITING
            elif slot.bank is not None and slot.bank.charge < physics.cv_start_percent:
                slot.charging = ChargingState.CHARGING
            else:
                slot.charging = ChargingState.TOPPING

    def _blocked_charging_state(self, slot: Slot) -> ChargingState | None:
        if not slot.charging_enabled:
            return ChargingState.OFF
        if not slot.detected or not slot.id_readable:
            return ChargingState.IDLE
        cutoff_faults = {InjectedFault.CHARGER, InjectedFault.TEMPERATURE_SENSOR}
        if slot.overheated or cutoff_faults & slot.injected:
            return ChargingState.CUTOFF
        if not slot.wants_charge(self.config.charging.recharge_below_percent):
            return ChargingState.FULL
        return None
