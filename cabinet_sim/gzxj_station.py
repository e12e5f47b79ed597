"""A GZXJ station board: the only board on the line, running every slot of the cabinet.

The station speaks the ASCII protocol of `protocol.gzxj`. Where the published protocol leaves
a behaviour open, the choice made here is listed under "Simulator behaviour" in
docs/protocol-gzxj.md.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cabinet_sim.emulation import Reply
from cabinet_sim.gzxj_slots import Rules, StationSlots
from cabinet_sim.hardware import REBOOT_S, SimulationError
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.timeline import TimerHandle
from protocol.gzxj.codec import decode_frame, encode_message
from protocol.gzxj.codes import Command, RentResult
from protocol.gzxj.deframer import Deframer
from protocol.gzxj.errors import GzxjError
from protocol.gzxj.messages import (
    ForceUnlockReply,
    ForceUnlockRequest,
    Message,
    QueryRequest,
    RentConfirm,
    RentReply,
    RentRequest,
    RentSlotRequest,
    ReturnConfirm,
    ReturnReport,
    RulesReply,
    RulesRequest,
    SlotReport,
    message_fields,
)
from protocol.slotbus.codes import BootReason, EventKind

if TYPE_CHECKING:
    from cabinet_sim.cabinet import Cabinet

logger = logging.getLogger(__name__)

STATUS_NUMBERS = (0, 0, 0)
"""The three AC status numbers; their meaning is unknown, so the station sends zeros."""
RESULT_SEVERITY = (RentResult.OK, RentResult.TIMEOUT, RentResult.LOCK_ABNORMAL)
"""Order in which FA of every slot reports the worst result."""


@dataclass(slots=True)
class OrderRecord:
    """A rent the station executed, kept so that a repeated order id gets the same reply."""

    reply: str  # the frame text sent back
    result: RentResult
    slot: int
    confirmed: bool = False  # BR arrived


@dataclass(slots=True)
class PendingReturn:
    """An inserted bank whose RS report the host has not confirmed yet."""

    bank_id: str | None
    charge: int
    reports: int = 0
    timer: TimerHandle | None = None


@dataclass(slots=True)
class StationStats:
    frames: int = 0
    ignored: int = 0  # undecodable frames and layouts a host does not send
    stale_message_ids: int = 0
    cached_replies: int = 0
    resets: int = 0


class GzxjStation:
    """The station: decodes host frames, drives the slots, and reports on its own."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self.config = cabinet.config.gzxj
        self.address = self.config.address
        self.slots = StationSlots(cabinet, self.config.take_window_s)
        self.rules = Rules(
            self.config.min_charge, self.config.lock_fault_blocks, self.config.cable_fault_blocks
        )
        self.orders: OrderedDict[int, OrderRecord] = OrderedDict()
        self.returns: dict[int, PendingReturn] = {}
        self.confirmed: set[int] = {
            number for number in range(1, self.slots.count + 1) if cabinet.slot(number).detected
        }
        """Slots whose bank was there at start or whose return the host confirmed."""
        self.silent = False
        self.ready_at = cabinet.now
        self.last_heard = cabinet.now
        self.last_host_message_id = 0
        self.stats = StationStats()
        self._message_id = 0
        self._deframer = Deframer()
        self._report_timer: TimerHandle | None = None
        self._watchdog: TimerHandle | None = None
        for board in cabinet.boards.values():
            board.events.acknowledge(board.events.last_id)
        cabinet.subscribe(self._on_notice)
        self._schedule_report()
        self._arm_watchdog()

    @property
    def responsive(self) -> bool:
        return not self.silent and self.cabinet.now >= self.ready_at

    # The line

    def handle(self, data: bytes) -> list[Reply]:
        if not self.responsive:
            return []  # a silent or rebooting station does not read the line
        replies: list[Reply] = []
        for frame in self._deframer.feed(data):
            if frame.address != self.address:
                continue
            self.stats.frames += 1
            self.last_heard = self.cabinet.now
            try:
                decoded = decode_frame(frame)
            except GzxjError as exc:
                self.stats.ignored += 1
                logger.debug("gzxj station: frame ignored: %s", exc)
                continue
            # The station runs every slot, so every board reports current values.
            for board in self.cabinet.boards.values():
                board.sync_physics()
            reply = self._dispatch(decoded.body)
            if reply is not None:
                replies.append(reply)
        return replies

    def reset_input(self) -> None:
        self._deframer.reset()

    def set_silent(self, address: int | str, silent: bool) -> None:
        self._check_address(address)
        self.silent = silent

    def restart(self, address: int | str, reason: BootReason) -> None:
        self._check_address(address)
        self.reset(f"restart ({reason.name})", reason)

    def _check_address(self, address: int | str) -> None:
        if str(address) != self.address:
            raise SimulationError(f"the GZXJ station has address {self.address}, not {address}")

    def _dispatch(self, body: Message) -> Reply | None:
        if isinstance(body, RentRequest | RentSlotRequest):
            cached = self.orders.get(body.order_id)
            if cached is not None:
                self.stats.cached_replies += 1
                logger.info("gzxj station: order %d repeated, cached reply sent", body.order_id)
                return Reply(cached.reply.encode("ascii"), label=f"order {body.order_id}")
        handler = self._handlers().get(type(body))
        if handler is None:
            self.stats.ignored += 1
            logger.debug("gzxj station: %s is not a host message, ignored", type(body).__name__)
            return None
        message_id: int = message_fields(body)["message_id"]  # every host layout has one
        if message_id != 0 and message_id <= self.last_host_message_id:
            self.stats.stale_message_ids += 1
            logger.info(
                "gzxj station: message id %d not above %d, ignored",
                message_id,
                self.last_host_message_id,
            )
            return None
        if message_id != 0:
            self.last_host_message_id = message_id
        return handler(body)

    def _handlers(self) -> dict[type[Message], Callable[[Any], Reply | None]]:
        return {
            QueryRequest: self._query,
            RentRequest: self._rent_any,
            RentSlotRequest: self._rent_slot,
            RentConfirm: self._confirm_rent,
            ReturnConfirm: self._confirm_return,
            ForceUnlockRequest: self._force_unlock,
            RulesRequest: self._set_rules,
        }

    def _next_message_id(self) -> int:
        self._message_id += 1
        return self._message_id

    def _encode(self, command: Command, body: Message) -> str:
        return encode_message(command, body, self.address)

    def _reply(self, command: Command, body: Message, extra_delay_s: float = 0.0) -> Reply:
        text = self._encode(command, body)
        return Reply(text.encode("ascii"), extra_delay_s, f"gzxj station {command}")

    # Reports

    def report(self, slot: int = 0) -> SlotReport:
        """Return the AC report of every slot (`slot` 0) or of one; none for an unknown slot."""
        for board in self.cabinet.boards.values():
            board.update_charging()
        numbers = range(1, self.slots.count + 1) if slot == 0 else [slot]
        records = tuple(
            self.slots.record(number, confirmed=number in self.confirmed)
            for number in numbers
            if 1 <= number <= self.slots.count
        )
        return SlotReport(
            self._next_message_id(),
            self.config.device_id,
            self.config.firmware,
            self.slots.count,
            *STATUS_NUMBERS,
            records,
        )

    def _query(self, request: QueryRequest) -> Reply:
        return self._reply(Command.AC, self.report(request.slot))

    def _schedule_report(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
        self._report_timer = self.cabinet.timeline.schedule_in(
            self.config.report_interval_s, self._send_report
        )

    def _send_report(self) -> None:
        if self.responsive:
            text = self._encode(Command.AC, self.report())
            self.cabinet.send_unsolicited(text.encode("ascii"), "gzxj station AC")
        self._schedule_report()

    # Renting

    def _rent_any(self, request: RentRequest) -> Reply:
        candidates = [
            number
            for number in range(1, self.slots.count + 1)
            if number in self.confirmed and self.slots.rentable(number, self.rules)
        ]
        return self._rent(Command.BW, request.order_id, self.slots.fullest(candidates))

    def _rent_slot(self, request: RentSlotRequest) -> Reply:
        number = request.slot
        known = (
            number in self.confirmed
            and number <= self.slots.count
            and self.slots.rentable(number, self.rules)
        )
        return self._rent(Command.FB, request.order_id, number if known else None)

    def _rent(self, command: Command, order_id: int, number: int | None) -> Reply:
        bank_id = None
        if number is None:
            result, number = RentResult.NO_BANK, 0
        else:
            bank_id = self.slots.bank_id(number)
            result = self.slots.open(number)
        body = RentReply(self._next_message_id(), order_id, result, number, bank_id)
        delay = self._result_delay(result)
        reply = self._reply(command, body, delay)
        self.orders[order_id] = OrderRecord(reply.data.decode("ascii"), result, number)
        while len(self.orders) > self.config.order_cache_size:
            self.orders.popitem(last=False)
        logger.info(
            "gzxj station: %s order %d slot %d bank %s -> %s",
            command,
            order_id,
            number,
            bank_id,
            result.name,
        )
        return reply

    def _result_delay(self, result: RentResult) -> float:
        if result is RentResult.TIMEOUT:
            return self.config.rent_timeout_s
        if result is RentResult.NO_BANK:
            return 0.0
        return self.cabinet.config.lock_confirm_s

    def _confirm_rent(self, request: RentConfirm) -> None:
        record = self.orders.get(request.order_id)
        if record is None:
            logger.info("gzxj station: BR for unknown order %d ignored", request.order_id)
            return
        record.confirmed = True

    def _force_unlock(self, request: ForceUnlockRequest) -> Reply:
        if request.slot > self.slots.count:
            result = RentResult.NO_BANK
        else:
            numbers = range(1, self.slots.count + 1) if request.slot == 0 else [request.slot]
            results = {self.slots.open(number) for number in numbers}
            result = max(results, key=RESULT_SEVERITY.index)
        logger.info("gzxj station: force unlock of slot %d -> %s", request.slot, result.name)
        body = ForceUnlockReply(self._next_message_id(), request.slot, result)
        return self._reply(Command.FA, body, self._result_delay(result))

    def _set_rules(self, request: RulesRequest) -> Reply:
        self.rules = Rules(
            request.min_charge, request.lock_fault_blocks, request.cable_fault_blocks
        )
        logger.info("gzxj station: rules set to %s", self.rules)
        return self._reply(Command.CM, RulesReply(self._next_message_id(), True))

    # Returns

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is not NoticeKind.EVENT:
            return
        board = self.cabinet.boards[notice.board]
        # The station consumes the boards' events itself; nothing else reads the queues.
        board.events.acknowledge(board.events.last_id)
        if notice.event is None or notice.slot == 0:
            return
        number = self.cabinet.cabinet_slot(notice.board, notice.slot)
        kind = notice.event.kind
        if kind is EventKind.BANK_INSERTED:
            self._start_return(number)
        elif kind in (EventKind.BANK_REMOVED, EventKind.UNLOCK_TAKEN):
            self._bank_left(number)

    def _start_return(self, number: int) -> None:
        self._bank_left(number)
        record = self.slots.record(number, confirmed=False)
        pending = PendingReturn(record.bank_id, record.charge)
        self.returns[number] = pending
        self._send_return(number, pending)

    def _send_return(self, number: int, pending: PendingReturn) -> None:
        if self.returns.get(number) is not pending:
            return
        if self.responsive:
            body = ReturnReport(self._next_message_id(), number, pending.bank_id, pending.charge)
            self.cabinet.send_unsolicited(
                self._encode(Command.RS, body).encode("ascii"), f"gzxj station RS slot {number}"
            )
            pending.reports += 1
        pending.timer = self.cabinet.timeline.schedule_in(
            self.config.return_repeat_s, lambda: self._send_return(number, pending)
        )

    def _bank_left(self, number: int) -> None:
        self.confirmed.discard(number)
        pending = self.returns.pop(number, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    def _confirm_return(self, confirm: ReturnConfirm) -> None:
        pending = self.returns.get(confirm.slot)
        if pending is None or pending.bank_id != confirm.bank_id:
            logger.info(
                "gzxj station: return confirmation for slot %d bank %s matches no report",
                confirm.slot,
                confirm.bank_id,
            )
            return
        if pending.timer is not None:
            pending.timer.cancel()
        del self.returns[confirm.slot]
        self.confirmed.add(confirm.slot)
        logger.info("gzxj station: return in slot %d confirmed", confirm.slot)

    # Watchdog and reset

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self.cabinet.timeline.schedule(
            self.last_heard + self.config.host_silence_reset_s, self._check_watchdog
        )

    def _check_watchdog(self) -> None:
        if self.cabinet.now >= self.last_heard + self.config.host_silence_reset_s:
            self.reset(f"no frame from the host for {self.config.host_silence_reset_s:.0f} s")
        self._arm_watchdog()

    def reset(self, reason: str, boot_reason: BootReason = BootReason.WATCHDOG) -> None:
        """Restart the station: the order cache, message ids and open take windows are lost.

        Every lock returns, the station is deaf for REBOOT_S and then sends an AC report.
        Unconfirmed returns, confirmed flags and the renting rules are kept.
        """
        self.stats.resets += 1
        logger.warning("gzxj station reset: %s", reason)
        self.orders.clear()
        self.last_host_message_id = 0
        self._message_id = 0
        self._deframer.reset()
        for board in self.cabinet.boards.values():
            board.boot(boot_reason, unresponsive_s=0.0)
        now = self.cabinet.now
        self.ready_at = now + REBOOT_S
        self.last_heard = now
        self._arm_watchdog()
        if self._report_timer is not None:
            self._report_timer.cancel()
        self._report_timer = self.cabinet.timeline.schedule(self.ready_at, self._send_report)
