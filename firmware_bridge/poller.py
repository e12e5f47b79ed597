"""The poll scheduler: events often, status and bank data less often, within a bus budget."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

from firmware_bridge.board_events import (
    BoardEventHandler,
    enable_charging,
    read_bank,
    read_banks,
)
from firmware_bridge.clock import wait_event
from firmware_bridge.core import BridgeCore
from firmware_bridge.errors import BoardRejectedError, BridgeError, PortError, SinkError
from firmware_bridge.events import BankRemoved, BankReturned, FaultRaised
from firmware_bridge.links import BoardLink
from firmware_bridge.model import CHARGING_STATES, SlotModel
from firmware_bridge.results import BankInfo, BoardEventKey
from firmware_bridge.store import EventWatermark
from protocol.cabinet import FaultKind, LinkState
from protocol.slotbus import (
    AckAndRead,
    Capability,
    ChargingRequest,
    Command,
    Empty,
    EventAck,
    EventBatch,
    EventKind,
    EventsRequest,
    Identity,
    Message,
    SlotFlag,
    SlotRange,
    SlotsStatus,
    Status,
    bank_id_hex,
)
from protocol.slotbus.constants import MAX_BANKS_PER_READ, MAX_EVENTS_PER_READ

logger = logging.getLogger(__name__)

COOL_DOWN_C = 15.0
"""Charging switched off for heat resumes when the bank is this much below the limit."""

Job = Callable[[], Awaitable[None]]


BURST_S = 0.1
"""Bus time, in seconds, that poll jobs may use back to back before the budget paces them."""

STATUS_PART_SLOTS = 1
"""Slots per GET_SLOT_RANGE of the periodic status read: 33 bytes, 2.9 ms of wire time.

An eject command waits for the exchange on the bus when it arrives. With one slot per
exchange that exchange is no longer than the read of one event."""

SINK_RETRY_S = 5.0
"""Pause after the sink failed to take an event (for example a full outbox)."""


def next_tick(now: float, interval: float) -> float:
    """Return the first multiple of `interval` after `now`.

    Recurring polls of all boards land on the same ticks and run back to back, so an idle
    gateway wakes up once per tick instead of once per board and job.
    """
    return (math.floor(now / interval) + 1) * interval


class PollBudget:
    """A token bucket that keeps polls to `share` of the bus time over the long run.

    Credit, in seconds of bus time, grows at `share` per second up to BURST_S, and each poll
    job spends the time it held the bus. Jobs wait only while the credit is negative, so a
    round of polls of every board runs back to back.
    """

    def __init__(self, share: float, now: float) -> None:
        self._share = share
        self._credit = BURST_S
        self._updated = now

    def _refill(self, now: float) -> None:
        self._credit = min(BURST_S, self._credit + (now - self._updated) * self._share)
        self._updated = now

    def spend(self, busy_s: float, now: float) -> None:
        if self._share >= 1.0:
            return
        self._refill(now)
        self._credit -= busy_s

    def available_at(self, now: float) -> float:
        """Return when the next poll job may start."""
        if self._share >= 1.0:
            return now
        self._refill(now)
        if self._credit >= 0:
            return now
        return now - self._credit / self._share


class Poller:
    def __init__(self, core: BridgeCore) -> None:
        self._core = core
        self._events = BoardEventHandler(core)
        self._budget = PollBudget(core.config.bus_budget, core.clock.monotonic())
        self.watermarks: dict[int, EventWatermark] = {}

    async def run(self) -> None:
        core = self._core
        while True:
            if not core.port_open:
                await self._wait_wakeup(None)
                continue
            now = core.clock.monotonic()
            due, job = self._next_job(now)
            due = max(due, self._budget.available_at(now))
            if due > now:
                await self._wait_wakeup(due - now)
                continue
            started = now
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
            self._budget.spend(core.clock.monotonic() - started, core.clock.monotonic())

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
            (link.next_status_at, 2, lambda: self.refresh_status(link)),
        ]
        if link.status_pending:
            jobs.append((now, 2, lambda: self.poll_slot_status(link)))
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
        link.active_until = now + core.config.idle_after_s
        await self.poll_status(link)
        await self.poll_events(link, identified=True)

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
        link.ack_up_to = 0  # the board cleared those events when it rebooted
        link.reconcile_needed = True
        for waiter in self._core.waiters.values():
            if waiter.slot.board == link.address and not waiter.future.done():
                waiter.future.set_result(None)  # the eject must find out for itself

    async def poll_events(self, link: BoardLink, *, identified: bool = False) -> None:
        """Read latched events, hand each on, then acknowledge what was handed on.

        `identified` is true when a reply to IDENTIFY arrived just before, so a BOARD_BOOT event
        of the same boot needs no second IDENTIFY.
        """
        core = self._core
        batch = await self._read_events(link)
        if batch is None:
            return
        rebooted = link.identity is None or batch.boot_count != link.identity.boot_count & 0xFFFF
        booted = any(event.kind is EventKind.BOARD_BOOT for event in batch.events)
        # A BOARD_BOOT event may also come from a board swapped in at this address, so it
        # is checked with IDENTIFY unless that just happened.
        if rebooted or (booted and not identified):
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
            if link.supports(Capability.ACK_ON_READ):
                # The next read carries the acknowledgement, so one exchange instead of two.
                link.ack_up_to, link.ack_boot_count = handled, batch.boot_count
            else:
                await self._acknowledge(link, handled, batch.boot_count)
        await self._charge_returned(link)

        now = core.clock.monotonic()
        if batch.events:
            link.active_until = now + core.config.idle_after_s
        drained = batch.pending <= len(batch.events)
        link.next_events_at = now if not drained else now + self._events_interval(link, now)
        if drained and link.reconcile_needed:
            await self.poll_status(link)

    async def _read_events(self, link: BoardLink) -> EventBatch | None:
        """Read a batch of events, acknowledging the previous batch in the same request when
        the board supports ACK_AND_READ_EVENTS."""
        core = self._core
        request: Message = EventsRequest(MAX_EVENTS_PER_READ)
        command = Command.READ_EVENTS
        if link.ack_up_to and link.supports(Capability.ACK_ON_READ):
            request = AckAndRead(link.ack_up_to, link.ack_boot_count, MAX_EVENTS_PER_READ)
            command = Command.ACK_AND_READ_EVENTS
        try:
            batch = await core.request(link, command, request)
        except BoardRejectedError as exc:
            if command is Command.READ_EVENTS:
                raise
            up_to = link.ack_up_to
            link.ack_up_to = 0
            if exc.error.status is not Status.UNKNOWN_COMMAND:
                # The board rejects only an acknowledgement past its last event id. It lost
                # events that the gateway has seen, so its slots are read again.
                logger.warning(
                    "board %d rejected ACK_AND_READ_EVENTS up to event %d: %s; reading its "
                    "slots again",
                    link.address,
                    up_to,
                    exc,
                )
                link.next_status_at = core.clock.monotonic()
                raise
            link.drop_capability(Capability.ACK_ON_READ, command.name)
            await self._acknowledge(link, up_to, link.ack_boot_count)
            batch = await core.request(
                link, Command.READ_EVENTS, EventsRequest(MAX_EVENTS_PER_READ)
            )
        else:
            # After a reboot the board ignored the acknowledgement, and those events are gone.
            link.ack_up_to = 0
        return batch if isinstance(batch, EventBatch) else None

    def _events_interval(self, link: BoardLink, now: float) -> float:
        """Poll a board's events often while it is busy, and less often once it is quiet.

        A board is busy for `idle_after_s` after its last event and while an eject on one of
        its slots runs. Events wait on the board until read, so a quiet board loses nothing;
        only the delay of the first event after a quiet spell grows.
        """
        config = self._core.config
        if now < link.active_until or self._core.ejecting_on(link.address):
            return config.event_poll_interval_s
        return next_tick(now, config.idle_event_poll_interval_s) - now

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
        """Read GET_SLOTS; rebuild the slots when events were lost.

        Reboots need no IDENTIFY here: every READ_EVENTS reply carries the boot count, and a
        board that booted has a BOARD_BOOT event queued.
        """
        core = self._core
        status = await core.request(link, Command.GET_SLOTS, Empty())
        if not isinstance(status, SlotsStatus):
            return
        now = core.clock.monotonic()
        if link.reconcile_needed:
            await self._reconcile(link, status, now)
        for record in status.slots:
            core.model.apply_status(link, record, now)
        link.status_read = True
        link.next_status_at = next_tick(now, core.config.status_interval_s)
        await core.publish("status read")

    async def refresh_status(self, link: BoardLink) -> None:
        """Read every slot's status, the periodic job.

        On version-3 boards the read runs in parts of STATUS_PART_SLOTS slots, so an eject
        that arrives meanwhile waits for one short exchange only.
        """
        core = self._core
        if (
            link.reconcile_needed
            or not link.status_read
            or link.slot_count <= STATUS_PART_SLOTS
            or not link.supports(Capability.SLOT_RANGE)
        ):
            await self.poll_status(link)
            return
        for first in range(1, link.slot_count + 1, STATUS_PART_SLOTS):
            count = min(STATUS_PART_SLOTS, link.slot_count - first + 1)
            if not await self._read_slot_range(link, first, count):
                return
        link.next_status_at = next_tick(core.clock.monotonic(), core.config.status_interval_s)
        await core.publish("status read")

    async def poll_slot_status(self, link: BoardLink) -> None:
        """Read the status of the slots an event changed: GET_SLOT_RANGE on version-3 boards.

        A GET_SLOTS of a 6-slot board occupies the bus for about 10 ms, and an eject that
        arrives during it waits. The status of one slot takes about 3 ms, so each pending
        slot is read on its own.
        """
        slots = sorted(link.status_pending)
        link.status_pending.clear()
        if link.reconcile_needed or not link.supports(Capability.SLOT_RANGE):
            await self.poll_status(link)
            return
        for number in slots:
            if number > link.slot_count or not await self._read_slot_range(link, number, 1):
                return
        await self._core.publish("status read")

    async def _read_slot_range(self, link: BoardLink, first: int, count: int) -> bool:
        """Read and apply GET_SLOT_RANGE; return False when the board rejected it as unknown
        and a GET_SLOTS ran instead."""
        core = self._core
        try:
            status = await core.request(link, Command.GET_SLOT_RANGE, SlotRange(first, count))
        except BoardRejectedError as exc:
            if exc.error.status is not Status.UNKNOWN_COMMAND:
                raise
            link.drop_capability(Capability.SLOT_RANGE, Command.GET_SLOT_RANGE.name)
            await self.poll_status(link)
            return False
        if isinstance(status, SlotsStatus):
            now = core.clock.monotonic()
            for record in status.slots:
                if first <= record.slot < first + count:
                    core.model.apply_status(link, record, now)
        return True

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
        """Read bank data: first the whole board with GET_BANKS where the board has it, then
        one occupied slot per exchange in turn, each about every `bank_interval_s`.

        A GET_BANKS of 6 slots takes 13.5 ms of wire time and GET_BANK 3.4 ms, so an eject
        command that arrives during a periodic read waits for a short exchange.
        """
        core = self._core
        interval = core.config.bank_interval_s / max(1, link.slot_count)
        link.next_bank_at = next_tick(core.clock.monotonic(), interval)
        if not link.banks_read and link.supports(Capability.BANK_BATCH):
            link.banks_read = True
            await self._read_board_banks(link)
            return
        slots = [s for s in core.model.board_slots(link) if s.present]
        if not slots:
            return
        link.bank_cursor = (link.bank_cursor + 1) % len(slots)
        await self._read_and_control(link, slots[link.bank_cursor])

    async def _read_board_banks(self, link: BoardLink) -> None:
        core = self._core
        if not any(slot.present for slot in core.model.board_slots(link)):
            return
        for first in range(1, link.slot_count + 1, MAX_BANKS_PER_READ):
            count = min(MAX_BANKS_PER_READ, link.slot_count - first + 1)
            for slot, info in await read_banks(core, link, first, count):
                await self._control_temperature(link, slot, info)
        await core.publish("bank data read")

    async def _read_and_control(self, link: BoardLink, slot: SlotModel) -> None:
        """Read bank data and switch charging off above the overheat limit, on when cool again."""
        info = await read_bank(self._core, link, slot)
        await self._core.publish("bank data read")
        if info is not None:
            await self._control_temperature(link, slot, info)

    async def _control_temperature(self, link: BoardLink, slot: SlotModel, info: BankInfo) -> None:
        """Switch charging off at the overheat limit, and on again once the bank cooled down."""
        core = self._core
        if info.temperature_c is None or slot.status is None:
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
