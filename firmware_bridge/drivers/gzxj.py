"""Driver for a GZXJ station board: the same cabinet model and events as the native bridge.

GZXJ has no event queue and no unlock tokens, so this driver compares AC reports to find
takes, removals and tamper, reports returns from RS and confirms each one only after the
sink stored it, and repeats a rent after a lost reply only with the same order id, which is
the eject's token. docs/firmware-bridge.md ("Field protocols") states what remains guaranteed.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from firmware_bridge.drivers.common import UnsupportedCommandError
from firmware_bridge.drivers.gzxj_line import RENT_TIMEOUT_S, StationTimeoutError
from firmware_bridge.drivers.gzxj_reports import GzxjReports
from firmware_bridge.drivers.gzxj_slots import bank_present
from firmware_bridge.eject import EjectRequest, eject_result
from firmware_bridge.errors import NotConnectedError
from firmware_bridge.events import FaultRaised
from firmware_bridge.model import SlotModel
from firmware_bridge.results import EjectResult, SelfTestReport
from protocol.cabinet import EjectFailReason, EjectOutcome, EjectRejectReason, SlotState
from protocol.gzxj import (
    Command,
    ForceUnlockReply,
    ForceUnlockRequest,
    Message,
    RentConfirm,
    RentReply,
    RentSlotRequest,
    SlotRecord,
)
from protocol.gzxj.mapping import rent_result

logger = logging.getLogger(__name__)

TAKE_POLL_S = 0.5
"""CQ interval while a take window runs."""


class _Expired(Exception):
    """Raised right before a write when the eject's deadline has passed."""


class GzxjDriver(GzxjReports):
    """Drives one GZXJ station (address 0) that runs every slot of the cabinet.

    Global slot N is station slot N. The configured boards only split the slots for the
    snapshot, and all of them share the station's link state.
    """

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
        self, order: EjectRequest, number: int | None, *, resolving: bool
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

    async def _confirm_rent(self, order: EjectRequest, slot: SlotModel) -> None:
        """Send BR once the result is recorded; GZXJ has no reply to it."""
        if order.maintenance:
            return
        body = RentConfirm(self.line.next_message_id(), order.token, slot.slot)
        try:
            await self.line.send(Command.BR, body)
        except NotConnectedError:
            logger.info("eject token %d: BR not sent, the port closed", order.token)

    def _rent_request(self, order: EjectRequest, slot: SlotModel) -> tuple[Command, Message]:
        message_id = self.line.next_message_id()
        if order.maintenance:
            return Command.FA, ForceUnlockRequest(message_id, slot.slot)
        return Command.FB, RentSlotRequest(message_id, order.token, slot.slot)

    async def _rent(
        self, order: EjectRequest, slot: SlotModel
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
        self, order: EjectRequest, slot: SlotModel, reply: Message
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
            return eject_result(self._core, order, slot, outcome=EjectOutcome.TAKEN), slot
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
        result = eject_result(
            self._core,
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
        self, order: EjectRequest, slot: SlotModel
    ) -> tuple[EjectResult, SlotModel | None]:
        """No reply to any attempt: an open lock shows that the rent ran."""
        record = await self._slot_record(slot)
        if record is not None and not record.locked:
            self._opened(slot)
            return eject_result(self._core, order, slot, outcome=EjectOutcome.TAKEN), slot
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
        self, order: EjectRequest, slot: SlotModel, bank_id: str | None
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
                return eject_result(
                    self._core, order, slot, outcome=EjectOutcome.TAKEN, bank_id=bank_id
                )
            if record is not None and (record.locked or now >= end):
                return eject_result(self._core, order, slot, outcome=EjectOutcome.NOT_TAKEN)
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
