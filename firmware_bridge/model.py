"""The cabinet model: per-slot facts from status, bank data and events, and what follows.

Slot state, rentability, stock counts and the snapshot are derived here from the last facts.
Whether a bank is in a slot (`present`) changes only through board events or an explicit
reconciliation, because GET_SLOTS may show a bank that already left for a few seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from firmware_bridge.config import BridgeConfig
from firmware_bridge.links import BoardLink
from firmware_bridge.results import BankInfo
from firmware_bridge.snapshot import BoardIdentity, BoardSnapshot, SlotSnapshot, StockCounts
from protocol.cabinet import LinkState, SlotState
from protocol.slotbus import (
    BankData,
    ChargingState,
    SlotFault,
    SlotFlag,
    SlotStatus,
    bank_id_hex,
)
from protocol.slotbus.constants import CHARGE_UNKNOWN as CHARGE_UNKNOWN_VALUE

HEALTH_TREND_LENGTH = 8

CHARGING_STATES = frozenset({ChargingState.CHARGING, ChargingState.TOPPING, ChargingState.WAITING})

_IDENTIFIED_AND_SEATED = int(SlotFlag.ID_VALID | SlotFlag.BANK_SEATED)


def bank_info(data: BankData) -> BankInfo:
    """Convert GET_BANK data; unreadable values become None."""
    unreadable = data.charge == CHARGE_UNKNOWN_VALUE
    return BankInfo(
        bank_id=bank_id_hex(data.bank_id),
        charge=None if unreadable else data.charge,
        voltage_mv=None if unreadable else data.voltage_mv,
        current_ma=None if unreadable else data.current_ma,
        temperature_c=None if unreadable else data.temperature_dc / 10,
        cycles=None if unreadable else data.cycles,
        health_pct=None if unreadable else data.health,
        capacity_mah=None if unreadable else data.capacity_mah,
        faults=tuple(flag.name or "" for flag in data.faults),
    )


@dataclass(slots=True)
class SlotModel:
    slot: int  # global number
    board: int  # board address
    board_slot: int
    status: SlotStatus | None = None
    bank: BankInfo | None = None  # last GET_BANK of the bank now in the slot
    present: bool | None = None  # None until the first status read
    bank_id: str | None = None
    found_by_reconcile: bool = False  # the return was reported by reconciliation, not an event
    phase: SlotState | None = None  # EJECTING or AWAITING_TAKE while an eject runs
    settle_until: float = 0.0
    disabled_reason: str | None = None
    overheat_hold: bool = False  # charging switched off by the bridge for temperature
    reported_state: SlotState = SlotState.UNKNOWN


@dataclass(slots=True)
class HealthRecord:
    trend: deque[int] = field(default_factory=lambda: deque(maxlen=HEALTH_TREND_LENGTH))
    cycles: int = -1


class CabinetModel:
    """All slots of the cabinet, numbered 1..N in board order."""

    def __init__(self, config: BridgeConfig, links: list[BoardLink]) -> None:
        self._config = config
        self.links = links
        self.slots: list[SlotModel] = []
        for link in links:
            for board_slot in range(1, link.spec.slot_count + 1):
                slot = link.global_slot(board_slot)
                self.slots.append(SlotModel(slot, link.address, board_slot))
        self._by_address = {link.address: link for link in links}
        self.health: dict[str, HealthRecord] = {}
        self.reported_stock: StockCounts | None = None

    def slot(self, number: int) -> SlotModel | None:
        if 1 <= number <= len(self.slots):
            return self.slots[number - 1]
        return None

    def link_of(self, slot: SlotModel) -> BoardLink:
        return self._by_address[slot.board]

    def board_slots(self, link: BoardLink) -> list[SlotModel]:
        return [s for s in self.slots if s.board == link.address]

    def faults(self, slot: SlotModel) -> SlotFault:
        return slot.status.faults if slot.status is not None else SlotFault(0)

    def temperature(self, slot: SlotModel) -> float | None:
        return slot.bank.temperature_c if slot.bank is not None else None

    def charge(self, slot: SlotModel) -> int | None:
        if slot.bank is not None and slot.bank.charge is not None:
            return slot.bank.charge
        if slot.status is None or slot.status.charge == CHARGE_UNKNOWN_VALUE:
            return None
        return slot.status.charge

    def retire(self, slot: SlotModel) -> bool:
        health = slot.bank.health_pct if slot.bank is not None else None
        return health is not None and health < self._config.retire_health_pct

    def state(self, slot: SlotModel) -> SlotState:
        """Derive the slot state from the last facts."""
        link = self.link_of(slot)
        if slot.phase is not None:
            return slot.phase
        if slot.disabled_reason is not None:
            return SlotState.DISABLED
        if (
            link.state is LinkState.OFFLINE
            or slot.status is None
            or slot.board_slot > link.slot_count
        ):
            return SlotState.UNKNOWN
        if self.faults(slot) or slot.status.charging is ChargingState.CUTOFF:
            return SlotState.FAULTED
        if not slot.present:
            return SlotState.EMPTY
        if slot.status.charging in CHARGING_STATES:
            return SlotState.CHARGING
        return SlotState.READY

    def rentable(self, slot: SlotModel, now: float) -> bool:
        """Bank present, identified and seated, charged enough, cool, healthy, slot usable."""
        return self._rentable_in(slot, self.state(slot), now)

    def _rentable_in(self, slot: SlotModel, state: SlotState, now: float) -> bool:
        """Return `rentable` for a slot whose derived `state` the caller already has."""
        if state not in (SlotState.READY, SlotState.CHARGING) or slot.status is None:
            return False
        # Plain int arithmetic: IntFlag's & builds a flag object, and this runs for every slot
        # on every state publish.
        if int(slot.status.flags) & _IDENTIFIED_AND_SEATED != _IDENTIFIED_AND_SEATED:
            return False
        if not slot.bank_id:
            return False
        if now < slot.settle_until:
            return False
        charge = self.charge(slot)
        if charge is None or charge < self._config.rentable_min_charge:
            return False
        temperature = self.temperature(slot)
        if temperature is not None and temperature >= self._config.overheat_limit_c:
            return False
        if slot.bank is not None and slot.bank.faults:
            return False
        return not self.retire(slot)

    def best_slot(self, now: float) -> SlotModel | None:
        """Pick the rentable slot with the highest charge, then the coolest, then the healthiest."""
        candidates = [s for s in self.slots if self.rentable(s, now)]
        if not candidates:
            return None

        def rank(slot: SlotModel) -> tuple[int, float, int, int]:
            temperature = self.temperature(slot)
            health = slot.bank.health_pct if slot.bank is not None else None
            return (
                -(self.charge(slot) or 0),
                temperature if temperature is not None else 0.0,
                -(health if health is not None else 0),
                slot.slot,
            )

        return min(candidates, key=rank)

    def stock(
        self, now: float, states: list[tuple[SlotModel, SlotState]] | None = None
    ) -> StockCounts:
        """Count the slots by use; `states` are the derived states when the caller has them."""
        rentable = charging = empty = faulted = 0
        if states is None:
            states = [(slot, self.state(slot)) for slot in self.slots]
        for slot, state in states:
            if self._rentable_in(slot, state, now):
                rentable += 1
            elif state is SlotState.EMPTY:
                empty += 1
            elif state in (SlotState.FAULTED, SlotState.DISABLED, SlotState.UNKNOWN):
                faulted += 1
            else:
                charging += 1
        return StockCounts(rentable=rentable, charging=charging, empty=empty, faulted=faulted)

    def apply_status(self, link: BoardLink, status: SlotStatus, now: float) -> None:
        """Take a GET_SLOTS record; the first one also sets whether a bank is present."""
        slot = self.slot(link.global_slot(status.slot))
        if slot is None or slot.board != link.address or status.slot > link.slot_count:
            return
        slot.status = status
        if slot.present is None and now >= slot.settle_until:
            slot.present = bool(status.flags & SlotFlag.BANK_PRESENT)
            slot.bank_id = bank_id_hex(status.bank_id) if slot.present else None

    def apply_bank(self, slot: SlotModel, info: BankInfo | None) -> None:
        slot.bank = info
        if info is not None and info.bank_id is not None and slot.present:
            slot.bank_id = info.bank_id

    def update_health(self, info: BankInfo) -> tuple[tuple[int, ...], bool] | None:
        """Record a bank's SoH and cycles; return the trend when either changed."""
        if info.bank_id is None or info.health_pct is None or info.cycles is None:
            return None
        record = self.health.setdefault(info.bank_id, HealthRecord())
        changed = not record.trend or record.trend[-1] != info.health_pct
        if changed:
            record.trend.append(info.health_pct)
        if not changed and record.cycles == info.cycles:
            return None
        record.cycles = info.cycles
        return tuple(record.trend), info.health_pct < self._config.retire_health_pct

    def snapshot_slot(self, slot: SlotModel, now: float) -> SlotSnapshot:
        bank = slot.bank
        faults = tuple(flag.name or "" for flag in self.faults(slot))
        if bank is not None:
            faults += bank.faults
        return SlotSnapshot(
            slot=slot.slot,
            board=slot.board,
            board_slot=slot.board_slot,
            state=self.state(slot),
            bank_id=slot.bank_id if slot.present else None,
            identified=bool(slot.present and slot.bank_id),
            charge=self.charge(slot) if slot.present else None,
            voltage_mv=bank.voltage_mv if bank else None,
            current_ma=bank.current_ma if bank else None,
            temperature_c=bank.temperature_c if bank else None,
            cycles=bank.cycles if bank else None,
            health_pct=bank.health_pct if bank else None,
            faults=faults,
            disabled_reason=slot.disabled_reason,
            rentable=self.rentable(slot, now),
            retire=self.retire(slot),
        )


def snapshot_board(link: BoardLink) -> BoardSnapshot:
    identity = None
    if link.identity is not None:
        raw = link.identity
        identity = BoardIdentity(
            board_id=raw.board_id,
            boot_count=raw.boot_count,
            firmware=raw.firmware_version,
            hardware_revision=raw.hardware_revision,
            slot_count=raw.slot_count,
            max_charging=raw.max_charging,
            capabilities=tuple(flag.name or "" for flag in raw.capabilities),
        )
    return BoardSnapshot(
        address=link.address,
        first_slot=link.first_slot,
        slot_count=link.spec.slot_count,
        link=link.state,
        reason=link.reason,
        identity=identity,
    )
