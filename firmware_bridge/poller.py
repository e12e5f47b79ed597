"""The poll scheduler: events often, status and bank data less often, within a bus budget."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from firmware_bridge.board_events import BoardEventHandler, enable_charging, read_bank
from firmware_bridge.clock import wait_event
from firmware_bridge.core import BridgeCore
from firmware_bridge.errors import BoardRejectedError, BridgeError, PortError, SinkError
from firmware_bridge.events import BankRemoved, BankReturned, FaultRaised
from firmware_bridge.links import BoardLink
from firmware_bridge.model import CHARGING_STATES, SlotModel
from firmware_bridge.results import BoardEventKey
from firmware_bridge.store import EventWatermark
from protocol.cabinet import FaultKind, LinkState
from protocol.slotbus import (
    ChargingRequest,
    Command,
    Empty,
    EventAck,
    EventBatch,
    EventKind,
    EventsRequest,
    Identity,
    SlotFlag,
    SlotsStatus,
    bank_id_hex,
)
from protocol.slotbus.constants import MAX_EVENTS_PER_READ

logger = logging.getLogger(__name__)

COOL_DOWN_C = 15.0
"""Charging switched off for heat resumes when the bank is this much below the limit."""

Job = Callable[[], Awaitable[None]]


SINK_RETRY_S = 5.0
"""Pause after the sink failed to take an event (for example a full outbox)."""


class Poller:
    def __init__(self, core: BridgeCore) -> None:
        self._core = core
        self._events = BoardEventHandler(core)
        self.watermarks: dict[int, EventWatermark] = {}

    async def run(self) -> None:
        core = self._core
        while True:
            if not core.port_open:
                await self._wait_wakeup(None)
                continue
            now = core.clock.monotonic()
            due, job = self._next_job(now)
            if due > now:
                await self._wait_wakeup(due - now)
                continue
            started = core.clock.monotonic()
            try:
                await job()
            except PortError as exc:
                logger.debug("poll stopped by the port: %s", exc)
                continue
            except SinkError as exc:
                # Nothing was acknowledged past the event that failed: the board keeps it.
                logger.error("%s; retrying in %.0f s", exc, SINK_RETRY_S)
                await core.clock.sleep(SINK_RETRY_S)
                continue
            except BridgeError as exc:
                logger.debug("poll failed: %s", exc)
            self._check_ready()
            busy = core.clock.monotonic() - started
            budget = core.config.bus_budget
            if budget < 1.0 and busy > 0:
                await core.clock.sleep(busy * (1.0 - budget) / budget)

    async def _wait_wakeup(self, seconds: float | None) -> None:
        core = self._core
        await wait_event(core.clock, core.poll_wakeup, seconds)
        core.poll_wakeup.clear()

    def _next_job(self, now: float) -> tuple[float, Job]:
        """Return the earliest due job; events before status before bank data at equal times."""
        best: tuple[float, int, Job] | None = None
        for link in self._core.links:
            for due, rank, job in self._jobs(link, now):
                if best is None or (due, rank) < (best[0], best[1]):
                    best = (due, rank, job)
        if best is None:
            return now + 1.0, self._idle
        return best[0], best[2]

    def _jobs(self, link: BoardLink, now: float) -> list[tuple[float, int, Job]]:
        if link.state is LinkState.OFFLINE or link.identity is None:
            return [(link.next_probe_at, 0, lambda: self.probe(link))]
        jobs: list[tuple[float, int, Job]] = [
            (link.next_events_at, 1, lambda: self.poll_events(link)),
            (link.next_status_at, 2, lambda: self.poll_status(link)),
        ]
        if link.pending_bank_reads:
            jobs.append((now, 3, lambda: self.read_pending_bank(link)))
        jobs.append((link.next_bank_at, 4, lambda: self.read_next_bank(link)))
        return jobs

    async def _idle(self) -> None:
        return None

    def _check_ready(self) -> None:
        core = self._core
        if core.ready.is_set():
            return
        if all(
            link.contacted and (link.state is LinkState.OFFLINE or link.status_read)
            for link in core.links
        ):
            core.ready.set()

    async def probe(self, link: BoardLink) -> None:
        """IDENTIFY a board that is offline or not contacted yet; read its status on success."""
        core = self._core
        first_contact = not link.contacted
        retries = core.config.retries if first_contact else core.config.offline_retries
        try:
            identity = await core.request(link, Command.IDENTIFY, Empty(), retries=retries)
        except BridgeError:
            if first_contact:
                await core.emit_link_change(link, link.mark_offline("no reply to IDENTIFY"))
                core.schedule_probe(link)
                await core.publish("board offline")
            elif link.state is not LinkState.OFFLINE:
                core.schedule_probe(link)
            raise
        if isinstance(identity, Identity):
            await self.apply_identity(link, identity)
        now = core.clock.monotonic()
        link.next_events_at = now
        link.next_bank_at = now
        await self.poll_status(link)
        await self.poll_events(link)

    async def apply_identity(self, link: BoardLink, identity: Identity) -> None:
        """Take a board's identity; a new boot_count or board_id starts a new event sequence."""
        previous = link.identity
        link.identity = identity
        if previous is None:
            stored = self.watermarks.get(identity.board_id)
            link.stored_boot_count = stored.boot_count if stored else None
            same_boot = stored is not None and stored.boot_count == identity.boot_count
            link.last_event_id = stored.event_id if stored and same_boot else 0
            link.last_dropped = None
            if stored is not None and not same_boot:
                # The board rebooted while the gateway was stopped and its event queue is gone:
                # compare its slots with the occupancy saved before the stop.
                link.reconcile_needed = True
            else:
                # Unacknowledged events of this boot are read again; the board's status is the
                # baseline and the saved occupancy is not needed.
                for slot in self._core.model.board_slots(link):
                    if slot.phase is None:
                        slot.present = None
            logger.info(
                "board %d: id %016X, boot %d, firmware %s, %d slots",
                link.address,
                identity.board_id,
                identity.boot_count,
                identity.firmware_version,
                identity.slot_count,
            )
            return
        if (previous.board_id, previous.boot_count) == (identity.board_id, identity.boot_count):
            return
        logger.warning(
            "board %d rebooted (boot %d -> %d); rebuilding its slots",
            link.address,
            previous.boot_count,
            identity.boot_count,
        )
        link.last_event_id = 0
        link.last_dropped = None
        link.reconcile_needed = True
        for waiter in self._core.waiters.values():
            if waiter.slot.board == link.address and not waiter.future.done():
                waiter.future.set_result(None)  # the eject must find out for itself

    async def poll_events(self, link: BoardLink) -> None:
        """Read latched events, hand each on, then acknowledge what was handed on."""
        core = self._core
        batch = await core.request(link, Command.READ_EVENTS, EventsRequest(MAX_EVENTS_PER_READ))
        if not isinstance(batch, EventBatch):
            return
        rebooted = link.identity is None or batch.boot_count != link.identity.boot_count & 0xFFFF
        if rebooted or any(event.kind is EventKind.BOARD_BOOT for event in batch.events):
            identity = await core.request(link, Command.IDENTIFY, Empty())
            if isinstance(identity, Identity):
                await self.apply_identity(link, identity)
        await self._check_dropped(link, batch)

        handled = 0
        for event in batch.events:
            if event.event_id <= link.last_event_id or link.identity is None:
                handled = max(handled, event.event_id)
                continue
            key = self._key(link, event.event_id)
            await self._events.handle(link, event, key)
            link.last_event_id = event.event_id
            core.store.save_event_watermark(
                EventWatermark(key.board_id, key.boot_count, key.event_id)
            )
            handled = event.event_id
            await core.publish(event.kind.name.lower())
        if handled:
            await self._acknowledge(link, handled, batch.boot_count)
        await self._charge_returned(link)

        now = core.clock.monotonic()
        drained = batch.pending <= len(batch.events)
        link.next_events_at = now if not drained else now + core.config.event_poll_interval_s
        if drained and link.reconcile_needed:
            await self.poll_status(link)

    async def _charge_returned(self, link: BoardLink) -> None:
        while link.charge_on_pending:
            slot = self._core.model.slot(link.global_slot(link.charge_on_pending.pop()))
            if slot is not None and slot.present:
                await enable_charging(self._core, link, slot)

    def _key(self, link: BoardLink, event_id: int) -> BoardEventKey:
        identity = link.identity
        if identity is None:
            raise BridgeError(f"board {link.address} has no identity yet")
        return BoardEventKey(identity.board_id, identity.boot_count, event_id)

    async def _acknowledge(self, link: BoardLink, up_to: int, boot_count: int) -> None:
        try:
            await self._core.request(link, Command.ACK_EVENTS, EventAck(up_to, boot_count))
        except BoardRejectedError as exc:
            # The board rebooted since the read, so the ACK named events of an older boot.
            logger.warning("board %d rejected ACK_EVENTS up to %d: %s", link.address, up_to, exc)
            link.next_status_at = self._core.clock.monotonic()

    async def _check_dropped(self, link: BoardLink, batch: EventBatch) -> None:
        previous = link.last_dropped
        link.last_dropped = batch.dropped
        if previous is None or batch.dropped <= previous:
            return
        link.reconcile_needed = True
        lost = batch.dropped - previous
        logger.warning("board %d lost %d events to a full queue", link.address, lost)
        await self._core.emit(
            FaultRaised(
                kind=FaultKind.EVENT_OVERFLOW,
                slot=0,
                board=link.address,
                detail=f"{lost} events lost to a full queue; slots rebuilt from GET_SLOTS",
                key=None,
                at=self._core.clock.wall(),
            )
        )

    async def poll_status(self, link: BoardLink) -> None:
        """IDENTIFY (to notice reboots) and GET_SLOTS; rebuild the slots when events were lost."""
        core = self._core
        identity = await core.request(link, Command.IDENTIFY, Empty())
        if isinstance(identity, Identity):
            await self.apply_identity(link, identity)
        status = await core.request(link, Command.GET_SLOTS, Empty())
        if not isinstance(status, SlotsStatus):
            return
        now = core.clock.monotonic()
        if link.reconcile_needed:
            await self._reconcile(link, status, now)
        for record in status.slots:
            core.model.apply_status(link, record, now)
        link.status_read = True
        link.next_status_at = now + core.config.status_interval_s
        await core.publish("status read")

    async def _reconcile(self, link: BoardLink, status: SlotsStatus, now: float) -> None:
        """Compare GET_SLOTS with the model; report returns and removals the events missed."""
        core = self._core
        link.reconcile_needed = False
        for record in status.slots:
            slot = core.model.slot(link.global_slot(record.slot))
            if slot is None or slot.board != link.address or slot.phase is not None:
                continue
            if now < slot.settle_until or slot.present is None:
                continue
            present = bool(record.flags & SlotFlag.BANK_PRESENT)
            bank_id = bank_id_hex(record.bank_id) if record.flags & SlotFlag.ID_VALID else None
            swapped = bool(present and slot.present and bank_id and slot.bank_id != bank_id)
            if slot.present and (not present or swapped):
                await core.emit(
                    BankRemoved(
                        slot=slot.slot, bank_id=slot.bank_id, key=None, at=core.clock.wall()
                    )
                )
                slot.present = False
            if present and not slot.present:
                core.model.apply_status(link, record, now)
                await self._report_reconciled_return(link, slot, bank_id, record.flags)

    async def _report_reconciled_return(
        self, link: BoardLink, slot: SlotModel, bank_id: str | None, flags: SlotFlag
    ) -> None:
        core = self._core
        slot.present = True
        slot.bank_id = bank_id
        slot.found_by_reconcile = True
        info = await read_bank(core, link, slot)
        if info is not None and info.bank_id is not None:
            slot.bank_id = info.bank_id
        logger.info("slot %d: return of bank %s found by rebuild", slot.slot, slot.bank_id)
        await core.emit(
            BankReturned(
                slot=slot.slot,
                bank_id=slot.bank_id,
                identified=slot.bank_id is not None,
                seated=bool(flags & SlotFlag.BANK_SEATED),
                bank=info,
                key=None,
                reconciled=True,
                at=core.clock.wall(),
            )
        )
        await enable_charging(core, link, slot)

    async def read_pending_bank(self, link: BoardLink) -> None:
        board_slot = link.pending_bank_reads.pop()
        slot = self._core.model.slot(link.global_slot(board_slot))
        if slot is not None:
            await self._read_and_control(link, slot)

    async def read_next_bank(self, link: BoardLink) -> None:
        """Read the next occupied slot's bank data, round robin."""
        core = self._core
        slots = [s for s in core.model.board_slots(link) if s.present]
        interval = core.config.bank_interval_s / max(1, link.slot_count)
        link.next_bank_at = core.clock.monotonic() + interval
        if not slots:
            return
        link.bank_cursor = (link.bank_cursor + 1) % len(slots)
        await self._read_and_control(link, slots[link.bank_cursor])

    async def _read_and_control(self, link: BoardLink, slot: SlotModel) -> None:
        """Read bank data and switch charging off above the overheat limit, on when cool again."""
        core = self._core
        info = await read_bank(core, link, slot)
        await core.publish("bank data read")
        if info is None or info.temperature_c is None or slot.status is None:
            return
        limit = core.config.overheat_limit_c
        charging = slot.status.charging in CHARGING_STATES
        if info.temperature_c >= limit and charging and not slot.overheat_hold:
            slot.overheat_hold = True
            await core.request(link, Command.SET_CHARGING, ChargingRequest(slot.board_slot, False))
            await core.emit(
                FaultRaised(
                    kind=FaultKind.OVERHEAT,
                    slot=slot.slot,
                    board=link.address,
                    detail=f"charging switched off at {info.temperature_c:.1f} degC",
                    key=None,
                    at=core.clock.wall(),
                )
            )
        elif slot.overheat_hold and info.temperature_c < limit - COOL_DOWN_C:
            slot.overheat_hold = False
            await core.request(link, Command.SET_CHARGING, ChargingRequest(slot.board_slot, True))
