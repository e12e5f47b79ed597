"""Driver for S1TT slot boards: the same cabinet model and events as the native bridge.

S1TT has no event queue, no unlock token and no take window, so this driver polls SLOTS on
every board and compares each reply with the model: a filled bit that sets is a return, one
that clears without an eject is a removal, and a lock out of place without an eject is
tamper. UNLOCK is sent at most once per eject and never repeated. docs/firmware-bridge.md
("Field protocols") states what remains guaranteed.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from firmware_bridge.drivers.common import UnsupportedCommandError
from firmware_bridge.drivers.s1tt_boards import S1ttBoards
from firmware_bridge.eject import EjectRequest, eject_result
from firmware_bridge.errors import BoardOfflineError, NotConnectedError, UnknownSlotError
from firmware_bridge.links import BoardLink
from firmware_bridge.model import SlotModel
from firmware_bridge.results import EjectResult, SelfTestReport
from protocol.cabinet import (
    EjectFailReason,
    EjectOutcome,
    EjectRejectReason,
    LinkState,
    SlotState,
)
from protocol.s1tt import (
    BoardError,
    ChargeRequest,
    Command,
    Empty,
    SlotBits,
    SlotRef,
    SlotsReply,
)
from protocol.s1tt.mapping import unlock_result

logger = logging.getLogger(__name__)

TAKE_POLL_S = 0.3
"""SLOTS interval on the board of a running take window."""


class _Expired(Exception):
    """Raised right before the UNLOCK write when the eject's deadline has passed."""


class S1ttDriver(S1ttBoards):
    """Drives the configured S1TT boards; board slot n is wire slot n - 1."""

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
        """Send UNLOCK once and decide the outcome from SLOTS; one outcome per token."""
        order = self._order(token, window_s, deadline, maintenance)
        return await self._once(token, lambda: self._eject(order, slot))

    async def resolve_eject(
        self, slot: int | None, token: int, *, deadline: float | None
    ) -> EjectResult:
        """Return the known outcome of an eject cut off by a restart; never act again.

        S1TT cannot tell whether an UNLOCK already ran, so an eject without a known
        outcome ends FAILED(interrupted, uncertain) and is not repeated.
        """
        order = self._order(token, None, deadline, False)
        known = self._core.outcomes.get(token)
        if known is not None and not known.uncertain:
            return known
        found = self._core.model.slot(slot) if slot is not None else None
        detail = "the eject was interrupted and S1TT cannot tell whether the lock opened"
        result = self._fail(
            order, found, EjectFailReason.INTERRUPTED, uncertain=True, detail=detail
        )
        return await self._finish(result, None)

    async def _eject(self, order: EjectRequest, number: int | None) -> EjectResult:
        slot, early = self._check_slot(order, number)
        if early is not None:
            return await self._finish(early, None)
        assert slot is not None  # _check_slot returns a slot whenever it returns no result
        link = self._core.model.link_of(slot)
        bank_id, charge = slot.bank_id, self._core.model.charge(slot)
        slot.phase = SlotState.EJECTING
        await self._core.publish("eject started")
        try:
            result, opened = await self._unlock(order, link, slot)
            if opened:
                result = await self._follow_take(order, link, slot, bank_id)
        except BaseException:
            slot.phase = None
            raise
        return await self._finish(replace(result, bank_id=bank_id, charge=charge), slot)

    async def _unlock(
        self, order: EjectRequest, link: BoardLink, slot: SlotModel
    ) -> tuple[EjectResult, bool]:
        """Send UNLOCK once; return the result, and whether the lock opened."""
        if order.deadline is not None and self._clock.monotonic() >= order.deadline:
            return self._reject(order, slot, EjectRejectReason.EXPIRED), False
        placeholder = eject_result(self._core, order, slot, outcome=EjectOutcome.TAKEN)
        try:
            reply = await self._request(link, Command.UNLOCK, SlotRef(slot.board_slot - 1))
        except BoardError as exc:
            meaning = unlock_result(exc.raw_status)
            detail = f"UNLOCK status {exc.raw_status}"
            outcome = meaning.outcome or EjectOutcome.FAILED
            fields = {"fail_reason": meaning.fail_reason, "reject_reason": meaning.reject_reason}
            return eject_result(
                self._core, order, slot, outcome=outcome, detail=detail, **fields
            ), False
        except NotConnectedError:
            return self._fail(order, slot, EjectFailReason.BOARD_OFFLINE, uncertain=True), False
        if reply is not None:
            self._opened(slot)
            return placeholder, True
        return await self._after_lost_reply(order, link, slot)

    def _opened(self, slot: SlotModel) -> None:
        slot.phase = SlotState.AWAITING_TAKE
        slot.settle_until = self._clock.monotonic() + self._config.settle_s
        self._expected_open.add(slot.slot)

    async def _after_lost_reply(
        self, order: EjectRequest, link: BoardLink, slot: SlotModel
    ) -> tuple[EjectResult, bool]:
        """Read SLOTS after a lost UNLOCK reply: an open lock shows that the UNLOCK ran.

        The UNLOCK itself is never repeated.
        """
        bits = await self._slot_bits(link, slot)
        if bits is not None and not bits.locked:
            self._opened(slot)
            return eject_result(self._core, order, slot, outcome=EjectOutcome.TAKEN), True
        reason = EjectFailReason.TIMEOUT if bits is not None else EjectFailReason.BOARD_OFFLINE
        detail = "no reply to UNLOCK and the lock is shut; the UNLOCK is not repeated"
        return self._fail(order, slot, reason, uncertain=True, detail=detail), False

    async def _slot_bits(self, link: BoardLink, slot: SlotModel) -> SlotBits | None:
        try:
            reply = await self._request(link, Command.SLOTS, Empty())
        except (BoardError, NotConnectedError):
            return None
        if not isinstance(reply, SlotsReply):
            return None
        bits = reply.slots[slot.board_slot - 1]
        self._set_status(slot, bits)
        return bits

    async def _follow_take(
        self, order: EjectRequest, link: BoardLink, slot: SlotModel, bank_id: str | None
    ) -> EjectResult:
        """Decide TAKEN or NOT_TAKEN from SLOTS once the sensors settled (host-timed window)."""
        opened_at = self._clock.monotonic()
        end = opened_at + max(order.window_s, self._config.settle_s)
        give_up = end + self._config.eject_resolve_margin_s
        await self._clock.sleep(max(0.0, slot.settle_until - opened_at))
        while True:
            bits = await self._slot_bits(link, slot)
            now = self._clock.monotonic()
            if bits is not None and not bits.filled:
                slot.present, slot.bank_id, slot.bank = False, None, None
                self._banks.pop(slot.slot, None)
                return eject_result(
                    self._core, order, slot, outcome=EjectOutcome.TAKEN, bank_id=bank_id
                )
            if bits is not None and (bits.locked or now >= end):
                return eject_result(self._core, order, slot, outcome=EjectOutcome.NOT_TAKEN)
            if bits is None and now >= give_up:
                detail = "the board stopped answering during the take window"
                reason = EjectFailReason.BOARD_OFFLINE
                return self._fail(order, slot, reason, uncertain=True, detail=detail)
            await self._clock.sleep(TAKE_POLL_S)

    # Commands

    async def set_charging(self, slot: int, on: bool) -> None:
        """Switch charging with SET_CHARGE; raise BoardError when the board rejects it."""
        found = self._core.model.slot(slot)
        if found is None:
            raise UnknownSlotError(f"slot {slot} does not exist")
        link = self._core.model.link_of(found)
        if link.state is LinkState.OFFLINE:
            raise BoardOfflineError(f"board {link.address} of slot {slot} is offline")
        await self._request(link, Command.SET_CHARGE, ChargeRequest(found.board_slot - 1, on))

    async def lock(self, slot: int) -> None:
        raise UnsupportedCommandError("S1TT has no lock command; the latch returns by itself")

    async def self_test(self, slot: int) -> SelfTestReport:
        raise UnsupportedCommandError("S1TT has no self-test command")
