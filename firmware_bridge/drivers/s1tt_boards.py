"""The S1TT boards' side of the driver: SLOTS polling, comparison and bank reads."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from firmware_bridge.clock import Clock
from firmware_bridge.config import BridgeConfig, EchoMode
from firmware_bridge.drivers.common import DriverBase
from firmware_bridge.drivers.s1tt_line import BoardTimeoutError, S1ttLine
from firmware_bridge.drivers.s1tt_slots import bank_info, slot_status
from firmware_bridge.errors import NotConnectedError
from firmware_bridge.events import BankRemoved, BankReturned, EventSink, FaultRaised
from firmware_bridge.links import BoardLink
from firmware_bridge.model import SlotModel
from firmware_bridge.stats import BusStats
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import ByteLink, PortOpener
from protocol.cabinet import (
    FaultKind,
    LinkState,
)
from protocol.s1tt import (
    BankStatus,
    BankTimeoutError,
    BoardError,
    ChargeRequest,
    Command,
    Empty,
    SlotBits,
    SlotRef,
    SlotsReply,
)

logger = logging.getLogger(__name__)

STATUS_ATTEMPTS = 3
"""STATUS reads of a new bank before its id counts as unreadable."""


class S1ttBoards(DriverBase):
    """Keeps the model in step with the S1TT boards: SLOTS polls, STATUS reads and returns."""

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
        # NOTE: echo=auto is read as "no echo", because an S1TT echo cannot be distinguished
        # from a reply with the same bytes; set echo=on for an adapter that echoes.
        self.line = S1ttLine(self._clock, echo=config.echo is EchoMode.ON)
        self._line_up = asyncio.Event()
        self._state_lock = asyncio.Lock()
        self._stored: dict[int, tuple[bool, str | None]] = {}
        self._banks: dict[int, BankStatus] = {}  # global slot -> last STATUS of its bank
        self._unreadable: set[int] = set()
        self._expected_open: set[int] = set()
        self._tamper_reported: set[int] = set()

    async def run(self) -> None:
        """Open the port, poll the boards and keep going until cancelled."""
        self._load_stored_state()
        self._stored = self._core.store.load_occupancy()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._serve_port(self._serve_link), name="s1tt-port")
            tasks.create_task(self._poll(), name="s1tt-poller")

    def stats(self) -> BusStats:
        """Return the line's counters; per-board request counts are not kept for S1TT."""
        frames = self.line.deframer.stats
        return replace(
            super().stats(),
            frames_sent=self.line.frames_sent,
            frames_received=frames.frames,
            bytes_sent=self.line.bytes_sent,
            bytes_received=frames.bytes_in,
            bytes_dropped=frames.bytes_dropped,
            unmatched_replies=self.line.unmatched,
            port_open=self._core.port_open,
        )

    async def _serve_link(self, link: ByteLink) -> None:
        self.line.attach(link)
        self._line_up.set()
        for board in self._core.links:
            board.next_probe_at = 0.0
        try:
            while True:
                self.line.feed(await link.read())
        finally:
            self._line_up.clear()
            self.line.attach(None)

    # Polling

    async def _poll(self) -> None:
        core = self._core
        while True:
            await self._line_up.wait()
            for link in core.links:
                if link.state is LinkState.OFFLINE and self._clock.monotonic() < link.next_probe_at:
                    continue
                try:
                    await self._read_board(link)
                except NotConnectedError:
                    break
                except BoardError as exc:
                    logger.warning("board %d: SLOTS failed: %s", link.address, exc)
            if all(link.contacted for link in core.links):
                core.ready.set()
            await core.publish("slots polled")
            await self._clock.sleep(self._config.event_poll_interval_s)

    async def _read_board(self, link: BoardLink) -> SlotsReply | None:
        reply = await self._request(link, Command.SLOTS, Empty())
        if not isinstance(reply, SlotsReply):
            return None
        async with self._state_lock:
            for slot in self._core.model.board_slots(link):
                bits = reply.slots[slot.board_slot - 1]
                if slot.phase is None:
                    await self._compare(link, slot, bits)
                self._set_status(slot, bits)
        return reply

    async def _request(
        self, link: BoardLink, command: Command, body: SlotRef | Empty | ChargeRequest
    ) -> object | None:
        """Send one request and keep the board's link state; return None on a timeout."""
        core = self._core
        try:
            reply = await self.line.request(link.address, command, body)
        except BoardTimeoutError as exc:
            config = self._config
            change = link.record_failure(str(exc), config.degraded_after, config.offline_after)
            if link.state is LinkState.OFFLINE:
                core.schedule_probe(link)
            await core.emit_link_change(link, change)
            return None
        except BoardError:
            await core.emit_link_change(link, link.record_success())
            raise
        await core.emit_link_change(link, link.record_success())
        return reply

    def _set_status(self, slot: SlotModel, bits: SlotBits) -> None:
        expected = slot.phase is not None or slot.slot in self._expected_open
        bank = self._banks.get(slot.slot) if slot.present else None
        unreadable = slot.slot in self._unreadable
        slot.status = slot_status(bits, bank, unreadable=unreadable, expected_open=expected)

    async def _compare(self, link: BoardLink, slot: SlotModel, bits: SlotBits) -> None:
        if slot.present is None:
            stored = self._stored.get(slot.slot)
            if stored is None:
                slot.present = bits.filled  # the first picture is the baseline
                if bits.filled:
                    await self._read_bank(link, slot)
                    slot.bank_id = self._id_of(slot)
                return
            slot.present, slot.bank_id = stored
            if slot.present and bits.filled:
                await self._read_bank(link, slot)
        await self._check_lock(slot, bits)
        if self._clock.monotonic() < slot.settle_until:
            return  # the filled bit can still show the bank that was there before the UNLOCK
        if slot.present and not bits.filled:
            await self._removed(slot, "the bank left without an eject")
        elif not slot.present and bits.filled:
            await self._returned(link, slot)

    def _id_of(self, slot: SlotModel) -> str | None:
        bank = self._banks.get(slot.slot)
        return bank.serial if bank is not None and bank.serial else None

    async def _read_bank(self, link: BoardLink, slot: SlotModel) -> BankStatus | None:
        """Read STATUS up to STATUS_ATTEMPTS times; None when the bank never replies."""
        for _ in range(STATUS_ATTEMPTS):
            try:
                reply = await self._request(link, Command.STATUS, SlotRef(slot.board_slot - 1))
            except BankTimeoutError:
                continue
            except BoardError as exc:
                logger.warning("slot %d: STATUS failed: %s", slot.slot, exc)
                break
            if isinstance(reply, BankStatus):
                self._banks[slot.slot] = reply
                self._unreadable.discard(slot.slot)
                slot.bank = bank_info(reply)
                return reply
            if reply is None:
                return None  # the board is silent, not the bank
        self._banks.pop(slot.slot, None)
        self._unreadable.add(slot.slot)
        slot.bank = None
        return None

    async def _check_lock(self, slot: SlotModel, bits: SlotBits) -> None:
        if bits.locked:
            self._expected_open.discard(slot.slot)
            self._tamper_reported.discard(slot.slot)
            return
        if slot.slot in self._expected_open or slot.slot in self._tamper_reported:
            return
        self._tamper_reported.add(slot.slot)
        logger.warning("slot %d: lock open without an eject", slot.slot)
        await self._emit_fault(FaultKind.TAMPER, slot, "the lock is open without an eject")

    async def _emit_fault(self, kind: FaultKind, slot: SlotModel, detail: str) -> None:
        await self._core.emit(
            FaultRaised(
                kind=kind,
                slot=slot.slot,
                board=slot.board,
                detail=detail,
                key=None,
                at=self._clock.wall(),
            )
        )

    async def _removed(self, slot: SlotModel, reason: str) -> None:
        bank_id = slot.bank_id
        slot.present, slot.bank_id, slot.bank = False, None, None
        self._banks.pop(slot.slot, None)
        self._unreadable.discard(slot.slot)
        logger.info("slot %d: bank %s removed (%s)", slot.slot, bank_id, reason)
        await self._core.emit(
            BankRemoved(slot=slot.slot, bank_id=bank_id, key=None, at=self._clock.wall())
        )

    async def _returned(self, link: BoardLink, slot: SlotModel) -> None:
        """Report a filled bit that set: exactly one BankReturned per insert."""
        status = await self._read_bank(link, slot)
        identified = status is not None and bool(status.serial)
        slot.present = True
        slot.bank_id = status.serial if status is not None and identified else None
        logger.info("slot %d: bank %s returned", slot.slot, slot.bank_id)
        await self._core.emit(
            BankReturned(
                slot=slot.slot,
                bank_id=slot.bank_id,
                identified=identified,
                seated=status is not None,
                bank=slot.bank,
                key=None,
                reconciled=False,
                at=self._clock.wall(),
            )
        )
        if not identified:
            await self._emit_fault(
                FaultKind.ID_READ_FAILED, slot, "the returned bank's id could not be read"
            )
