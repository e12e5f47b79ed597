"""Turn board events into model updates and cabinet events."""

from __future__ import annotations

import logging

from firmware_bridge.core import BridgeCore
from firmware_bridge.errors import BridgeError
from firmware_bridge.events import (
    BankHealthReport,
    BankRemoved,
    BankReturned,
    EjectFinished,
    FaultRaised,
    LateEjectOutcome,
)
from firmware_bridge.links import BoardLink
from firmware_bridge.model import SlotModel, bank_info
from firmware_bridge.results import BankInfo, BoardEventKey, EjectResult
from protocol.cabinet import EjectFailReason, EjectOutcome, FaultKind
from protocol.slotbus import (
    BankBatch,
    BankData,
    BoardEvent,
    BootReason,
    ChargingRequest,
    Command,
    EventKind,
    InsertFlag,
    SlotFault,
    SlotRange,
    SlotRef,
    bank_id_hex,
)

logger = logging.getLogger(__name__)

ID_READ_ATTEMPTS = 3
"""GET_BANK reads of a returned bank before it is reported as unidentified."""

_TERMINAL = {
    EventKind.UNLOCK_TAKEN: EjectOutcome.TAKEN,
    EventKind.UNLOCK_NOT_TAKEN: EjectOutcome.NOT_TAKEN,
    EventKind.UNLOCK_LOCK_FAULT: EjectOutcome.FAILED,
}

_STATUS_CHANGING = frozenset(
    {
        EventKind.BANK_INSERTED,
        EventKind.BANK_REMOVED,
        EventKind.UNLOCK_NOT_TAKEN,
        EventKind.UNLOCK_TAKEN,
        EventKind.UNLOCK_LOCK_FAULT,
        EventKind.SLOT_OPENED,
        EventKind.LOCK_NOT_RETURNED,
    }
)

_FAULTS = {
    EventKind.SLOT_OPENED: FaultKind.TAMPER,
    EventKind.OVERHEAT: FaultKind.OVERHEAT,
    EventKind.ID_READ_FAILED: FaultKind.ID_READ_FAILED,
    EventKind.LOCK_NOT_RETURNED: FaultKind.LOCK_NOT_RETURNED,
}


async def read_bank(core: BridgeCore, link: BoardLink, slot: SlotModel) -> BankInfo | None:
    """Read GET_BANK for a slot, update the model and report the bank's health."""
    try:
        data = await core.request(link, Command.GET_BANK, SlotRef(slot.board_slot))
    except BridgeError as exc:
        logger.debug("GET_BANK of slot %d failed: %s", slot.slot, exc)
        return None
    if not isinstance(data, BankData):
        return None
    return await _apply_bank(core, slot, data)


async def read_banks(
    core: BridgeCore, link: BoardLink, first: int, count: int
) -> list[tuple[SlotModel, BankInfo]]:
    """Read GET_BANKS for board slots first..first+count-1 and apply each record like GET_BANK.

    Empty slots have no record, so their model entries stay as they are.
    """
    try:
        batch = await core.request(link, Command.GET_BANKS, SlotRange(first, count))
    except BridgeError as exc:
        logger.debug(
            "GET_BANKS of board %d slots %d+%d failed: %s", link.address, first, count, exc
        )
        return []
    if not isinstance(batch, BankBatch):
        return []
    read: list[tuple[SlotModel, BankInfo]] = []
    for data in batch.banks:
        slot = core.model.slot(link.global_slot(data.slot))
        if slot is None or slot.board != link.address or not first <= data.slot < first + count:
            logger.warning(
                "board %d sent bank data for slot %d outside the range %d+%d",
                link.address,
                data.slot,
                first,
                count,
            )
            continue
        read.append((slot, await _apply_bank(core, slot, data)))
    return read


async def _apply_bank(core: BridgeCore, slot: SlotModel, data: BankData) -> BankInfo:
    """Store a bank record in the model and report the bank's health when it changed."""
    info = bank_info(data)
    core.model.apply_bank(slot, info)
    health = core.model.update_health(info)
    if health is not None and info.bank_id is not None:
        trend, retire = health
        await core.emit(
            BankHealthReport(
                bank_id=info.bank_id,
                slot=slot.slot,
                health_pct=info.health_pct or 0,
                health_trend=trend,
                cycles=info.cycles or 0,
                retire=retire,
                at=core.clock.wall(),
            )
        )
    return info


async def enable_charging(core: BridgeCore, link: BoardLink, slot: SlotModel) -> None:
    """Switch charging on for a returned bank unless it is too hot; errors are only logged."""
    temperature = core.model.temperature(slot)
    if temperature is not None and temperature >= core.config.overheat_limit_c:
        return
    try:
        await core.request(link, Command.SET_CHARGING, ChargingRequest(slot.board_slot, True))
    except BridgeError as exc:
        logger.warning("switching charging on for slot %d failed: %s", slot.slot, exc)


class BoardEventHandler:
    def __init__(self, core: BridgeCore) -> None:
        self._core = core

    async def handle(self, link: BoardLink, event: BoardEvent, key: BoardEventKey) -> None:
        """Update the model and emit what the event means.

        Only requests that must precede the emitted events run here (reading a returned bank).
        Follow-up work is left to the poller, which stores the event watermark first, so that a
        crash after the hand-off cannot report the same board event again.
        """
        core = self._core
        slot = core.model.slot(link.global_slot(event.slot)) if event.slot else None
        if slot is not None and slot.board != link.address:
            slot = None
        logger.debug(
            "board %d event %d: %s slot %d",
            link.address,
            event.event_id,
            event.kind.name,
            event.slot,
        )
        if event.kind is EventKind.BOARD_BOOT:
            await self._on_boot(link, event, key)
        elif event.kind in _TERMINAL:
            await self._on_terminal(link, slot, event, key)
        elif slot is None:
            logger.warning(
                "board %d sent %s for unknown slot %d", link.address, event.kind.name, event.slot
            )
        elif event.kind is EventKind.BANK_INSERTED:
            await self._on_inserted(link, slot, event, key)
        elif event.kind is EventKind.BANK_REMOVED:
            await self._on_removed(slot, event, key)
        elif event.kind in _FAULTS:
            detail = event.kind.name.lower()
            if event.kind is EventKind.OVERHEAT:
                detail = f"charging stopped at {event.value / 10:.1f} degC"
            await self._fault(_FAULTS[event.kind], slot.slot, link, detail, key)
        if event.kind in _STATUS_CHANGING and slot is not None:
            link.status_pending.add(slot.board_slot)  # read its status soon for the new picture

    async def _fault(
        self,
        kind: FaultKind,
        slot: int,
        link: BoardLink,
        detail: str,
        key: BoardEventKey | None,
    ) -> None:
        level = logging.INFO if kind is FaultKind.BOARD_RESET else logging.WARNING
        logger.log(level, "board %d slot %d: %s (%s)", link.address, slot, kind, detail)
        await self._core.emit(
            FaultRaised(
                kind=kind,
                slot=slot,
                board=link.address,
                detail=detail,
                key=key,
                at=self._core.clock.wall(),
            )
        )

    async def _on_boot(self, link: BoardLink, event: BoardEvent, key: BoardEventKey) -> None:
        try:
            reason = BootReason(event.value).name.lower()
        except ValueError:
            reason = f"reason {event.value}"
        await self._fault(FaultKind.BOARD_RESET, 0, link, f"board booted ({reason})", key)

    async def _on_inserted(
        self, link: BoardLink, slot: SlotModel, event: BoardEvent, key: BoardEventKey
    ) -> None:
        core = self._core
        flags = InsertFlag(event.value & 0xFF)
        event_bank_id = bank_id_hex(event.bank_id)
        if slot.present and slot.found_by_reconcile and slot.bank_id == event_bank_id:
            slot.found_by_reconcile = False  # the rebuilt picture already reported this return
            return

        slot.present = True
        slot.found_by_reconcile = False
        slot.bank_id = event_bank_id
        slot.bank = None
        info = None
        # NOTE: the reads follow each other without a pause; a chip that needs longer to
        # answer is reported unidentified (and ID_READ_FAILED comes from the board).
        for _ in range(ID_READ_ATTEMPTS):
            info = await read_bank(core, link, slot)
            if info is None or info.bank_id is not None:
                break
        bank_id = info.bank_id if info is not None and info.bank_id else event_bank_id
        slot.bank_id = bank_id

        logger.info("slot %d: bank %s returned", slot.slot, bank_id or "(unidentified)")
        await core.emit(
            BankReturned(
                slot=slot.slot,
                bank_id=bank_id,
                identified=bank_id is not None,
                seated=bool(flags & InsertFlag.SEATED),
                bank=info,
                key=key,
                reconciled=False,
                at=core.clock.wall(),
            )
        )
        link.charge_on_pending.add(slot.board_slot)

    async def _on_removed(self, slot: SlotModel, event: BoardEvent, key: BoardEventKey) -> None:
        core = self._core
        was_present = slot.present
        bank_id = slot.bank_id or bank_id_hex(event.bank_id)
        slot.present = False
        slot.bank_id = None
        slot.bank = None
        slot.found_by_reconcile = False
        if was_present is False:
            return
        logger.warning("slot %d: bank %s removed outside a take window", slot.slot, bank_id)
        await core.emit(BankRemoved(slot=slot.slot, bank_id=bank_id, key=key, at=core.clock.wall()))

    async def _on_terminal(
        self, link: BoardLink, slot: SlotModel | None, event: BoardEvent, key: BoardEventKey
    ) -> None:
        core = self._core
        outcome = _TERMINAL[event.kind]
        if slot is not None:
            slot.phase = None
            if outcome is EjectOutcome.TAKEN:
                slot.present = False
                slot.bank_id = None
                slot.bank = None
        if event.kind is EventKind.UNLOCK_LOCK_FAULT:
            faults = SlotFault(event.value & 0xFFFF)
            detail = f"lock did not open for token {event.token} ({faults!r})"
            await self._fault(
                FaultKind.LOCK_FAULT, event.slot and (slot.slot if slot else 0), link, detail, key
            )

        waiter = core.waiters.get(event.token)
        known = core.outcomes.get(event.token)
        if known is not None and not known.uncertain:
            return  # the eject already finished with this outcome from the UNLOCK reply or a query
        result = EjectResult(
            token=event.token,
            slot=slot.slot if slot else None,
            outcome=outcome,
            fail_reason=EjectFailReason.LOCK_FAULT if outcome is EjectOutcome.FAILED else None,
            bank_id=bank_id_hex(event.bank_id) or (waiter.bank_id if waiter else None),
            charge=waiter.charge if waiter else None,
            temperature_c=waiter.temperature_c if waiter else None,
            finished_at=core.clock.wall(),
        )
        core.remember_outcome(result)
        if waiter is not None and not waiter.future.done():
            await core.emit(EjectFinished(result=result, at=result.finished_at))
            waiter.finish_emitted = True
            waiter.future.set_result(result)
            return
        core.uncertain.pop(event.token, None)
        logger.info("late outcome for token %d: %s", event.token, outcome)
        await core.emit(LateEjectOutcome(result=result, key=key, at=result.finished_at))
