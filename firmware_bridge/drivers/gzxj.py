"""Driver for a GZXJ station board: the same cabinet model and events as the native bridge.

GZXJ has no event queue and no unlock tokens, so this driver compares AC reports to find
takes, removals and tamper, reports returns from RS and confirms each one only after the
sink stored it, and repeats a rent after a lost reply only with the same order id, which is
the eject's token. docs/firmware-bridge.md ("Field protocols") states what remains guaranteed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from firmware_bridge.clock import Clock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.drivers.common import DriverBase, EjectOrder, UnsupportedCommandError
from firmware_bridge.drivers.gzxj_line import (
    QUERY_TIMEOUT_S,
    RENT_TIMEOUT_S,
    GzxjLine,
    StationTimeoutError,
)
from firmware_bridge.drivers.gzxj_slots import bank_present, slot_status
from firmware_bridge.errors import NotConnectedError
from firmware_bridge.events import BankRemoved, BankReturned, EventSink, FaultRaised
from firmware_bridge.model import SlotModel
from firmware_bridge.results import BankInfo, EjectResult, SelfTestReport
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import ByteLink, PortOpener
from protocol.cabinet import EjectFailReason, EjectOutcome, EjectRejectReason, FaultKind, SlotState
from protocol.gzxj import (
    Command,
    ForceUnlockReply,
    ForceUnlockRequest,
    Message,
    QueryRequest,
    RentConfirm,
    RentReply,
    RentSlotRequest,
    ReturnConfirm,
    ReturnReport,
    RulesRequest,
    SlotRecord,
    SlotReport,
)
from protocol.gzxj.mapping import rent_result

logger = logging.getLogger(__name__)

WATCHDOG_POLL_S = 60.0
"""Longest pause between two CQ; the station resets itself after 600 s without a frame."""

TAKE_POLL_S = 0.5
"""CQ interval while a take window runs."""


class _Expired(Exception):
    """Raised right before a write when the eject's deadline has passed."""


class GzxjDriver(DriverBase):
    """Drives one GZXJ station (address 0) that runs every slot of the cabinet.

    Global slot N is station slot N. The configured boards only split the slots for the
    snapshot, and all of them share the station's link state.
    """

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
        assert isinstance(reply, SlotReport)  # guaranteed by the matcher
        await self._record_success()
        await self._apply_report(reply)
        return reply

    async def _send_rules(self) -> None:
        """Give the station our minimum charge, so that it rents what the model calls rentable."""
        min_charge = self._config.rentable_min_charge
        body = RulesRequest(self.line.next_message_id(), min_charge, True, True)
        await self.line.request(
            Command.CM, body, lambda command, _: command is Command.CM, QUERY_TIMEOUT_S
        )
        self._rules_sent = True

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
        """A station restarts its message ids at 1 when it resets."""
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

    # Ejects

    async def eject(
        self,
        slot: int | None,
        token: int,
        *,
        window_s: int | None = None,
        deadline: float | None = None,
        maintenance: bool = False,
    ) -> EjectResult:
        """Rent from `slot` (FB, order id = token), or FA with `maintenance`; one outcome."""
        order = self._order(token, window_s, deadline, maintenance)
        return await self._once(token, lambda: self._eject(order, slot, resolving=False))

    async def resolve_eject(
        self, slot: int | None, token: int, *, deadline: float | None
    ) -> EjectResult:
        """Repeat the rent of an eject cut off by a restart, with the same order id.

        A station that still caches the order id replies with its earlier result and does
        not act again. After its cache lost the id (a station reset, or 64 newer orders in
        the simulator) the rent runs anew, which may eject a second bank.
        """
        order = self._order(token, None, deadline, False)
        known = self._core.outcomes.get(token)
        if known is not None and not known.uncertain:
            return known
        if deadline is not None and self._clock.monotonic() >= deadline:
            found = self._core.model.slot(slot) if slot is not None else None
            result = self._fail(
                order,
                found,
                EjectFailReason.INTERRUPTED,
                uncertain=True,
                detail="the eject was interrupted and its deadline has passed",
            )
            return await self._finish(result, None)
        return await self._once(token, lambda: self._eject(order, slot, resolving=True))

    async def _eject(
        self, order: EjectOrder, number: int | None, *, resolving: bool
    ) -> EjectResult:
        # A repeated rent skips the rentable check: its bank may have left with the first one.
        check = replace(order, maintenance=order.maintenance or resolving)
        slot, early = self._check_slot(check, number)
        if early is not None and resolving and early.outcome is EjectOutcome.REJECTED:
            # The earlier attempt may have rented the bank that is missing now.
            detail = "the eject was interrupted and no slot is left to repeat it on"
            reason = EjectFailReason.INTERRUPTED
            early = self._fail(order, slot, reason, uncertain=True, detail=detail)
        if early is not None:
            return await self._finish(early, None)
        assert slot is not None  # _check_slot returns a slot whenever it returns no result
        bank_id, charge = slot.bank_id, self._core.model.charge(slot)
        slot.phase = SlotState.EJECTING
        await self._core.publish("eject started")
        try:
            result, opened, replied = await self._rent(order, slot)
            if opened is not None:
                slot = opened
                result = await self._follow_take(order, slot, bank_id)
        except BaseException:
            slot.phase = None
            raise
        result = self._with_bank(result, bank_id, charge)
        await self._finish(result, slot)
        if replied:
            await self._confirm_rent(order, slot)
        return result

    def _with_bank(
        self, result: EjectResult, bank_id: str | None, charge: int | None
    ) -> EjectResult:
        return replace(result, bank_id=result.bank_id or bank_id, charge=charge)

    async def _confirm_rent(self, order: EjectOrder, slot: SlotModel) -> None:
        """Send BR once the result is recorded; GZXJ has no reply to it."""
        if order.maintenance:
            return
        body = RentConfirm(self.line.next_message_id(), order.token, slot.slot)
        try:
            await self.line.send(Command.BR, body)
        except NotConnectedError:
            logger.info("eject token %d: BR not sent, the port closed", order.token)

    def _rent_request(self, order: EjectOrder, slot: SlotModel) -> tuple[Command, Message]:
        message_id = self.line.next_message_id()
        if order.maintenance:
            return Command.FA, ForceUnlockRequest(message_id, slot.slot)
        return Command.FB, RentSlotRequest(message_id, order.token, slot.slot)

    async def _rent(
        self, order: EjectOrder, slot: SlotModel
    ) -> tuple[EjectResult, SlotModel | None, bool]:
        """Send the rent; return the result or the slot that opened, and whether a reply came.

        The result is a placeholder when a slot opened: the take decides the outcome.
        """

        def check_deadline() -> None:
            if order.deadline is not None and self._clock.monotonic() >= order.deadline:
                raise _Expired

        def matches(command: Command, message: Message) -> bool:
            if order.maintenance:
                return isinstance(message, ForceUnlockReply) and message.slot == slot.slot
            return isinstance(message, RentReply) and message.order_id == order.token

        # FA has no order id, so a lost FA reply is never repeated.
        attempts = 1 if order.maintenance else 1 + self._config.retries
        written = False
        for attempt in range(attempts):
            command, body = self._rent_request(order, slot)
            try:
                reply = await self.line.request(
                    command, body, matches, RENT_TIMEOUT_S, before_write=check_deadline
                )
            except _Expired:
                if not written:
                    return self._reject(order, slot, EjectRejectReason.EXPIRED), None, False
                break
            except StationTimeoutError:
                written = True
                logger.warning(
                    "eject token %d: no reply to %s (attempt %d)", order.token, command, attempt + 1
                )
                continue
            except NotConnectedError:
                reason = EjectFailReason.BOARD_OFFLINE
                return self._fail(order, slot, reason, uncertain=written), None, False
            result, opened = await self._rent_reply(order, slot, reply)
            return result, opened, True
        result, opened = await self._after_lost_reply(order, slot)
        return result, opened, False

    async def _rent_reply(
        self, order: EjectOrder, slot: SlotModel, reply: Message
    ) -> tuple[EjectResult, SlotModel | None]:
        code = reply.result if isinstance(reply, RentReply | ForceUnlockReply) else -1
        meaning = rent_result(int(code))
        if isinstance(reply, RentReply) and reply.slot not in (0, slot.slot):
            # A cached reply of an earlier rent of this order may name another slot.
            opened = self._core.model.slot(reply.slot)
            if opened is not None:
                slot.phase = None
                slot = opened
        if meaning.outcome is None:
            self._opened(slot)
            return self._result(order, slot, outcome=EjectOutcome.TAKEN), slot
        if meaning.fault is not None:
            await self._core.emit(
                FaultRaised(
                    kind=meaning.fault,
                    slot=slot.slot,
                    board=slot.board,
                    detail=f"rent result {int(code)}",
                    key=None,
                    at=self._clock.wall(),
                )
            )
        result = self._result(
            order,
            slot,
            outcome=meaning.outcome,
            fail_reason=meaning.fail_reason,
            reject_reason=meaning.reject_reason,
            detail=f"rent result {int(code)}",
        )
        return result, None

    def _opened(self, slot: SlotModel) -> None:
        slot.phase = SlotState.AWAITING_TAKE
        slot.settle_until = self._clock.monotonic() + self._config.settle_s
        self._expected_open.add(slot.slot)

    async def _after_lost_reply(
        self, order: EjectOrder, slot: SlotModel
    ) -> tuple[EjectResult, SlotModel | None]:
        """No reply to any attempt: an open lock shows that the rent ran."""
        record = await self._slot_record(slot)
        if record is not None and not record.locked:
            self._opened(slot)
            return self._result(order, slot, outcome=EjectOutcome.TAKEN), slot
        detail = "the station did not reply to the rent"
        result = self._fail(order, slot, EjectFailReason.TIMEOUT, uncertain=True, detail=detail)
        return result, None

    async def _slot_record(self, slot: SlotModel) -> SlotRecord | None:
        try:
            report = await self._query()
        except (StationTimeoutError, NotConnectedError):
            return None
        return next((record for record in report.slots if record.slot == slot.slot), None)

    async def _follow_take(
        self, order: EjectOrder, slot: SlotModel, bank_id: str | None
    ) -> EjectResult:
        """Decide TAKEN or NOT_TAKEN from AC reports once the sensors settled.

        TAKEN when the slot shows no bank, NOT_TAKEN when the lock is back in place with the
        bank, or when the host's take window ended with the bank still there.
        """
        opened_at = self._clock.monotonic()
        end = opened_at + max(order.window_s, self._config.settle_s)
        give_up = end + self._config.eject_resolve_margin_s
        await self._clock.sleep(max(0.0, slot.settle_until - opened_at))
        while True:
            record = await self._slot_record(slot)
            now = self._clock.monotonic()
            if record is not None and not bank_present(record):
                slot.present, slot.bank_id, slot.bank = False, None, None
                return self._result(order, slot, outcome=EjectOutcome.TAKEN, bank_id=bank_id)
            if record is not None and (record.locked or now >= end):
                return self._result(order, slot, outcome=EjectOutcome.NOT_TAKEN)
            if record is None and now >= give_up:
                reason = EjectFailReason.BOARD_OFFLINE
                detail = "the station stopped answering during the take window"
                return self._fail(order, slot, reason, uncertain=True, detail=detail)
            await self._clock.sleep(TAKE_POLL_S)

    # Commands GZXJ does not have

    async def lock(self, slot: int) -> None:
        raise UnsupportedCommandError("GZXJ has no lock command; the station locks by itself")

    async def self_test(self, slot: int) -> SelfTestReport:
        raise UnsupportedCommandError("GZXJ has no self-test command")

    async def set_charging(self, slot: int, on: bool) -> None:
        raise UnsupportedCommandError("GZXJ has no charging command; the station decides")
