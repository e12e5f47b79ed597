"""The GZXJ station's side of the driver: polling, AC report comparison and RS returns."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from firmware_bridge.clock import Clock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.drivers.common import DriverBase
from firmware_bridge.drivers.gzxj_line import QUERY_TIMEOUT_S, GzxjLine, StationTimeoutError
from firmware_bridge.drivers.gzxj_slots import bank_present, slot_status
from firmware_bridge.errors import NotConnectedError
from firmware_bridge.events import BankRemoved, BankReturned, EventSink, FaultRaised
from firmware_bridge.model import SlotModel
from firmware_bridge.results import BankInfo
from firmware_bridge.stats import BusStats
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import ByteLink, PortOpener
from protocol.cabinet import FaultKind
from protocol.gzxj import (
    Command,
    Message,
    QueryRequest,
    ReturnConfirm,
    ReturnReport,
    RulesRequest,
    SlotRecord,
    SlotReport,
)

logger = logging.getLogger(__name__)

WATCHDOG_POLL_S = 60.0
"""Maximum pause between two CQ, because the station resets itself after 600 s without a frame."""


class GzxjReports(DriverBase):
    """Keeps the model in step with one GZXJ station: CQ polls, AC reports and RS returns."""

    def __init__(
        self,
        config: BridgeConfig,
        sink: EventSink,
        store: BridgeStore,
        clock: Clock | None = None,
        *,
        opener: PortOpener | None = None,
    ) -> None:
        super().__init__(config, sink, store, clock, opener=opener)
        self.line = GzxjLine(self._clock)
        self._queue: asyncio.Queue[tuple[Command, Message]] = asyncio.Queue()
        self._line_up = asyncio.Event()
        self._state_lock = asyncio.Lock()
        self._stored: dict[int, tuple[bool, str | None]] = {}
        self._expected_open: set[int] = set()  # slots whose lock we opened and that may be open
        self._tamper_reported: set[int] = set()
        self._last_station_id = 0
        self._rules_sent = False

    async def run(self) -> None:
        """Open the port, poll the station and keep going until cancelled."""
        self._load_stored_state()
        self._stored = self._core.store.load_occupancy()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._serve_port(self._serve_link), name="gzxj-port")
            tasks.create_task(self._poll(), name="gzxj-poller")
            tasks.create_task(self._handle_unsolicited(), name="gzxj-reports")

    def stats(self) -> BusStats:
        """Return the line's counters; per-board request counts are not kept for GZXJ."""
        frames = self.line.deframer.stats
        return replace(
            super().stats(),
            frames_sent=self.line.frames_sent,
            frames_received=frames.frames,
            bytes_sent=self.line.bytes_sent,
            bytes_received=frames.bytes_in,
            bytes_dropped=frames.bytes_dropped,
            crc_errors=frames.crc_errors,
            port_open=self._core.port_open,
        )

    async def _serve_link(self, link: ByteLink) -> None:
        self.line.attach(link)
        self._line_up.set()
        self._rules_sent = False
        try:
            while True:
                data = await link.read()
                for message in self.line.feed(data):
                    self._queue.put_nowait(message)
        finally:
            self._line_up.clear()
            self.line.attach(None)

    # Polling and the station's reports

    async def _poll(self) -> None:
        interval = min(self._config.status_interval_s, WATCHDOG_POLL_S)
        while True:
            await self._line_up.wait()
            try:
                await self._query()
                if not self._rules_sent:
                    await self._send_rules()
            except StationTimeoutError as exc:
                await self._record_failure(str(exc))
            except NotConnectedError:
                pass
            await self._clock.sleep(interval)

    async def _query(self) -> SlotReport:
        body = QueryRequest(self.line.next_message_id(), 0)
        reply = await self.line.request(
            Command.CQ,
            body,
            lambda command, message: isinstance(message, SlotReport),
            QUERY_TIMEOUT_S,
        )
        if not isinstance(reply, SlotReport):  # the matcher accepts only AC reports
            raise StationTimeoutError(f"unexpected {type(reply).__name__} in reply to CQ")
        await self._record_success()
        await self._apply_report(reply)
        return reply

    async def _send_rules(self) -> None:
        """Give the station our minimum charge, so that it rents what the model calls rentable.

        A station that does not reply to CM is not counted as failing: CQ decides the link
        state, and CM is sent again only after a reconnect or a station reset.
        """
        min_charge = self._config.rentable_min_charge
        body = RulesRequest(self.line.next_message_id(), min_charge, True, True)
        self._rules_sent = True
        try:
            await self.line.request(
                Command.CM, body, lambda command, _: command is Command.CM, QUERY_TIMEOUT_S
            )
        except StationTimeoutError:
            logger.warning("gzxj station did not reply to CM; its own renting rules stay")

    async def _record_success(self) -> None:
        core = self._core
        for link in core.links:
            await core.emit_link_change(link, link.record_success())
        core.ready.set()

    async def _record_failure(self, reason: str) -> None:
        core = self._core
        for link in core.links:
            change = link.record_failure(
                reason, self._config.degraded_after, self._config.offline_after
            )
            await core.emit_link_change(link, change)
        if all(link.contacted for link in core.links):
            core.ready.set()
        await core.publish("station did not answer")

    async def _handle_unsolicited(self) -> None:
        while True:
            command, message = await self._queue.get()
            if isinstance(message, SlotReport):
                await self._apply_report(message)
            elif isinstance(message, ReturnReport):
                await self._handle_return(message)
            else:
                logger.info("gzxj %s %s arrived without a request, ignored", command, message)

    async def _check_station_reset(self, message_id: int) -> None:
        """Report a station reset, seen as its message ids starting again at 1."""
        previous, self._last_station_id = self._last_station_id, message_id
        if message_id >= previous or previous == 0:
            return
        logger.warning("gzxj station message id fell from %d to %d: reset", previous, message_id)
        self._rules_sent = False
        await self._core.emit(
            FaultRaised(
                kind=FaultKind.BOARD_RESET,
                slot=0,
                board=self._core.links[0].address,
                detail="the station restarted its message ids",
                key=None,
                at=self._clock.wall(),
            )
        )

    async def _apply_report(self, report: SlotReport) -> None:
        """Compare an AC report with the model: removals, tamper and the first picture."""
        async with self._state_lock:
            await self._check_station_reset(report.message_id)
            for record in report.slots:
                slot = self._core.model.slot(record.slot)
                if slot is None:
                    continue
                expected = slot.phase is not None or record.slot in self._expected_open
                slot.status = slot_status(record, expected_open=expected)
                if slot.phase is None:
                    await self._compare(slot, record)
            await self._core.publish("slot report")

    async def _compare(self, slot: SlotModel, record: SlotRecord) -> None:
        present = bank_present(record)
        if slot.present is None:
            stored = self._stored.get(slot.slot)
            if stored is None:
                # A bank whose return the host has not confirmed yet comes again with RS.
                slot.present = present and record.confirmed
                slot.bank_id = record.bank_id if slot.present else None
                return
            slot.present, slot.bank_id = stored
        await self._check_lock(slot, record)
        if self._clock.monotonic() < slot.settle_until:
            return  # the station can still show the bank that was there before the opening
        if slot.present and not present:
            await self._removed(slot, "the bank left without a rent")
        elif slot.present and record.bank_id is not None and record.bank_id != slot.bank_id:
            await self._removed(slot, "another bank is in the slot")
        elif not slot.present and present and record.confirmed:
            # Confirmed by the host, so its return was handed on before a restart.
            slot.present, slot.bank_id = True, record.bank_id

    async def _check_lock(self, slot: SlotModel, record: SlotRecord) -> None:
        if record.locked:
            self._expected_open.discard(slot.slot)
            self._tamper_reported.discard(slot.slot)
            return
        if slot.slot in self._expected_open or slot.slot in self._tamper_reported:
            return
        self._tamper_reported.add(slot.slot)
        logger.warning("slot %d: lock open without a rent", slot.slot)
        await self._core.emit(
            FaultRaised(
                kind=FaultKind.TAMPER,
                slot=slot.slot,
                board=slot.board,
                detail="the lock is open without a rent",
                key=None,
                at=self._clock.wall(),
            )
        )

    async def _removed(self, slot: SlotModel, reason: str) -> None:
        bank_id = slot.bank_id
        slot.present, slot.bank_id, slot.bank = False, None, None
        logger.info("slot %d: bank %s removed (%s)", slot.slot, bank_id, reason)
        await self._core.emit(
            BankRemoved(slot=slot.slot, bank_id=bank_id, key=None, at=self._clock.wall())
        )

    async def _handle_return(self, report: ReturnReport) -> None:
        """Hand a return on once, then confirm it; a repeated RS is only confirmed again."""
        async with self._state_lock:
            await self._check_station_reset(report.message_id)
            slot = self._core.model.slot(report.slot)
            if slot is None:
                logger.warning("gzxj RS for unknown slot %d ignored", report.slot)
                return
            if not (slot.present and slot.bank_id == report.bank_id):
                await self._returned(slot, report)
            else:
                logger.info("slot %d: return of %s repeated", slot.slot, report.bank_id)
        confirm = ReturnConfirm(self.line.next_message_id(), report.slot, report.bank_id)
        try:
            await self.line.send(Command.RS, confirm)
        except NotConnectedError:
            logger.info("slot %d: return not confirmed, the port closed", report.slot)

    async def _returned(self, slot: SlotModel, report: ReturnReport) -> None:
        core = self._core
        if slot.present:
            await self._removed(slot, "a new bank was reported in its place")
        identified = report.bank_id is not None
        info = BankInfo(bank_id=report.bank_id, charge=report.charge if identified else None)
        slot.present, slot.bank_id, slot.bank = True, report.bank_id, info
        slot.settle_until = 0.0
        wall = self._clock.wall()
        logger.info("slot %d: bank %s returned", slot.slot, report.bank_id)
        await core.emit(
            BankReturned(
                slot=slot.slot,
                bank_id=report.bank_id,
                identified=identified,
                seated=True,
                bank=info,
                key=None,
                reconciled=False,
                at=wall,
            )
        )
        if not identified:
            await core.emit(
                FaultRaised(
                    kind=FaultKind.ID_READ_FAILED,
                    slot=slot.slot,
                    board=slot.board,
                    detail="the returned bank's id could not be read",
                    key=None,
                    at=wall,
                )
            )
        await core.publish("bank returned")
