"""Eject: one UNLOCK per token, and exactly one outcome, never a guess.

An UNLOCK is repeated only with the same token, and never written after the deadline. When
the UNLOCK may have reached the board but no reply came, the outcome is learned from
QUERY_UNLOCK and the terminal board event, bounded by the take window plus a margin. If it is
still unknown the eject ends FAILED with `uncertain=True`, and a terminal event that arrives
later is reported as LateEjectOutcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from firmware_bridge.bus import PRIORITY_EJECT
from firmware_bridge.clock import wait_future
from firmware_bridge.core import BridgeCore, TokenWaiter
from firmware_bridge.errors import BoardRejectedError, BridgeError, NotConnectedError
from firmware_bridge.events import EjectFinished
from firmware_bridge.links import BoardLink
from firmware_bridge.model import SlotModel
from firmware_bridge.results import EjectResult
from protocol.cabinet import EjectFailReason, EjectOutcome, EjectRejectReason, LinkState, SlotState
from protocol.slotbus import (
    BoardBusyError,
    Command,
    Empty,
    Identity,
    NoBankError,
    SlotFaultError,
    TokenRef,
    TokenState,
    UnlockCode,
    UnlockRequest,
    UnlockResult,
    UnlockStatus,
    bank_id_hex,
)
from protocol.slotbus.constants import MAX_UNLOCK_WINDOW_S, MIN_UNLOCK_WINDOW_S

logger = logging.getLogger(__name__)

QUERY_INTERVAL_S = 0.5
"""Pause between QUERY_UNLOCK attempts while the board does not reply."""

FOLLOW_WAIT_S = 2.0
"""Wait for the terminal event this long before asking QUERY_UNLOCK again."""

MAX_UNLOCK_ROUNDS = 3
"""UNLOCK sends (same token) after the board proved it never ran the earlier ones."""

MAX_TOKEN = 0xFFFFFFFF


class _DeadlinePassed(Exception):
    """Raised right before a write when the command's deadline has passed."""


@dataclass(slots=True)
class EjectRequest:
    token: int
    window_s: int
    deadline: float | None
    maintenance: bool


@dataclass(slots=True)
class _Run:
    """One eject in flight."""

    request: EjectRequest
    link: BoardLink
    slot: SlotModel
    waiter: TokenWaiter
    boot: int | None  # boot_count when the eject started
    give_up_at: float  # monotonic time after which the outcome counts as unknown


def check_arguments(token: int, window_s: int) -> None:
    if not 1 <= token <= MAX_TOKEN:
        raise ValueError(f"eject token {token} is outside 1..{MAX_TOKEN}")
    if not MIN_UNLOCK_WINDOW_S <= window_s <= MAX_UNLOCK_WINDOW_S:
        raise ValueError(
            f"take window {window_s} s is outside {MIN_UNLOCK_WINDOW_S}..{MAX_UNLOCK_WINDOW_S} s"
        )


def eject_result(
    core: BridgeCore, request: EjectRequest, slot: SlotModel | None, **fields: object
) -> EjectResult:
    """Build the result of `request`, stamped with the core's wall clock."""
    return EjectResult(
        token=request.token,
        slot=slot.slot if slot is not None else None,
        finished_at=core.clock.wall(),
        **fields,  # type: ignore[arg-type]
    )


def rejected(
    core: BridgeCore, request: EjectRequest, slot: SlotModel | None, reason: EjectRejectReason
) -> EjectResult:
    return eject_result(core, request, slot, outcome=EjectOutcome.REJECTED, reject_reason=reason)


def failed(
    core: BridgeCore,
    request: EjectRequest,
    slot: SlotModel | None,
    reason: EjectFailReason,
    *,
    uncertain: bool = False,
    detail: str = "",
) -> EjectResult:
    return eject_result(
        core,
        request,
        slot,
        outcome=EjectOutcome.FAILED,
        fail_reason=reason,
        uncertain=uncertain,
        detail=detail,
    )


def choose_slot(
    core: BridgeCore, request: EjectRequest, number: int | None
) -> tuple[SlotModel | None, EjectResult | None]:
    """Pick and check the slot without touching the line.

    Return the slot, or the rejection or failure that ends the eject (then the slot is None).
    Every driver runs these checks, so an eject is rejected for the same reasons whatever the
    slot hardware's protocol.
    """
    now = core.clock.monotonic()
    if request.deadline is not None and now >= request.deadline:
        return None, rejected(core, request, None, EjectRejectReason.EXPIRED)
    if number is None:
        slot = core.model.best_slot(now)
        if slot is None:
            return None, rejected(core, request, None, EjectRejectReason.NO_RENTABLE_BANK)
    else:
        found = core.model.slot(number)
        if found is None:
            return None, rejected(core, request, None, EjectRejectReason.UNKNOWN_SLOT)
        slot = found
    if slot.phase is not None or any(w.slot is slot for w in core.waiters.values()):
        return None, rejected(core, request, slot, EjectRejectReason.SLOT_BUSY)
    if slot.disabled_reason is not None and not request.maintenance:
        return None, rejected(core, request, slot, EjectRejectReason.SLOT_DISABLED)
    link = core.model.link_of(slot)
    if link.state is LinkState.OFFLINE or not core.port_open:
        detail = link.reason if core.port_open else "serial port is not open"
        return None, failed(core, request, slot, EjectFailReason.BOARD_OFFLINE, detail=detail)
    if not request.maintenance:
        if slot.present is False:
            return None, rejected(core, request, slot, EjectRejectReason.SLOT_EMPTY)
        if not core.model.rentable(slot, now):
            return None, rejected(core, request, slot, EjectRejectReason.SLOT_NOT_RENTABLE)
    return slot, None


class Ejector:
    def __init__(self, core: BridgeCore) -> None:
        self._core = core

    def reject(
        self, request: EjectRequest, slot: SlotModel | None, reason: EjectRejectReason
    ) -> EjectResult:
        return rejected(self._core, request, slot, reason)

    def fail(
        self,
        request: EjectRequest,
        slot: SlotModel | None,
        reason: EjectFailReason,
        *,
        uncertain: bool = False,
        detail: str = "",
    ) -> EjectResult:
        return failed(self._core, request, slot, reason, uncertain=uncertain, detail=detail)

    def choose_slot(
        self, request: EjectRequest, number: int | None
    ) -> tuple[SlotModel | None, EjectResult | None]:
        return choose_slot(self._core, request, number)

    async def run(self, request: EjectRequest, number: int | None) -> EjectResult:
        """Eject once per token: a repeated token returns the first outcome without acting."""
        core = self._core
        check_arguments(request.token, request.window_s)
        known = core.outcomes.get(request.token)
        if known is not None:
            return known
        running = core.in_progress.get(request.token)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[EjectResult] = asyncio.get_running_loop().create_future()
        core.in_progress[request.token] = future
        try:
            result, emitted = await self._run_once(request, number)
            result = await self.finish(result, emitted=emitted)
            future.set_result(result)
            return result
        finally:
            del core.in_progress[request.token]
            if not future.done():
                future.cancel()

    async def _run_once(
        self, request: EjectRequest, number: int | None
    ) -> tuple[EjectResult, bool]:
        slot, ended = self.choose_slot(request, number)
        if ended is not None or slot is None:
            assert ended is not None  # choose_slot returns exactly one of the two
            logger.info("eject with token %d ended before UNLOCK: %s", request.token, ended)
            return ended, False
        return await self.eject(request, slot)

    async def eject(self, request: EjectRequest, slot: SlotModel) -> tuple[EjectResult, bool]:
        """Unlock `slot` and follow the token to its outcome; the slot was checked already.

        Return the result and whether EjectFinished was already emitted for it (the terminal
        board event emits it before the event is acknowledged).
        """
        core = self._core
        link = core.model.link_of(slot)
        run = _Run(
            request=request,
            link=link,
            slot=slot,
            waiter=TokenWaiter(
                slot=slot,
                bank_id=slot.bank_id if slot.present else None,
                charge=core.model.charge(slot) if slot.present else None,
                temperature_c=core.model.temperature(slot) if slot.present else None,
            ),
            boot=link.identity.boot_count if link.identity else None,
            give_up_at=core.clock.monotonic()
            + request.window_s
            + core.config.eject_resolve_margin_s,
        )
        core.waiters[request.token] = run.waiter
        core.hasten_events(link)
        slot.phase = SlotState.EJECTING
        # "eject started" is published after the first UNLOCK exchange (see
        # _unlock_and_follow): the sink may commit to storage, and that must not delay the
        # UNLOCK. The phase set above already keeps other ejects off this slot.
        try:
            result = await self._unlock_and_follow(run)
        finally:
            core.waiters.pop(request.token, None)
            slot.phase = None
        if run.waiter.finish_emitted and run.waiter.future.done():
            event_result = run.waiter.future.result()
            if event_result is not None:
                return event_result, True  # the terminal event decided the outcome first
        return result, False

    async def resolve_known(
        self, request: EjectRequest, link: BoardLink, status: UnlockStatus
    ) -> EjectResult:
        """Finish an eject from before a restart whose token the board has seen; never act."""
        core = self._core
        slot = core.model.slot(link.global_slot(status.slot))
        if slot is None or slot.board != link.address:
            detail = f"board {link.address} reports the token on unknown slot {status.slot}"
            failed = self.fail(request, None, EjectFailReason.BOARD_ERROR, detail=detail)
            return await self.finish(failed)
        run = _Run(
            request=request,
            link=link,
            slot=slot,
            waiter=TokenWaiter(
                slot=slot, bank_id=bank_id_hex(status.bank_id), charge=None, temperature_c=None
            ),
            boot=link.identity.boot_count if link.identity else None,
            give_up_at=core.clock.monotonic()
            + request.window_s
            + core.config.eject_resolve_margin_s,
        )

        core.waiters[request.token] = run.waiter
        core.hasten_events(link)
        result: EjectResult | None
        try:
            result = self._from_token_state(run, status, rebooted=False)
            if result is None:
                result = await self._follow(run, quick=False)
        finally:
            core.waiters.pop(request.token, None)
            slot.phase = None

        if result is None:
            result = self._uncertain(run, EjectFailReason.INTERRUPTED)
        emitted = run.waiter.finish_emitted
        if emitted and run.waiter.future.done():
            result = run.waiter.future.result() or result
        return await self.finish(result, emitted=emitted)

    async def _unlock_and_follow(self, run: _Run) -> EjectResult:
        core = self._core
        request, slot = run.request, run.slot
        for round_index in range(MAX_UNLOCK_ROUNDS):
            sent, outcome = await self._send_unlock(run)
            if round_index == 0:
                await core.publish("eject started")
            if outcome is not None:
                return outcome
            if sent == "opened":
                slot.phase = SlotState.AWAITING_TAKE
                slot.settle_until = core.clock.monotonic() + core.config.settle_s
                await core.publish("lock opened")
            resolved = await self._follow(run, quick=sent != "opened")
            if resolved is not None:
                return resolved
            # QUERY_UNLOCK returned UNKNOWN on the same boot, so the board never ran the UNLOCK.
            if request.deadline is not None and core.clock.monotonic() >= request.deadline:
                break
        return self.fail(request, slot, EjectFailReason.TIMEOUT, detail="unlock never ran")

    async def _send_unlock(self, run: _Run) -> tuple[str, EjectResult | None]:
        """Send UNLOCK (same token on every attempt).

        Return ("opened", None) after OPENED, ("unknown", None) when the board may have received
        it without replying, or ("", result) for a final outcome.
        """
        core = self._core
        request, slot = run.request, run.slot
        written = False

        def check_deadline() -> None:
            nonlocal written
            if request.deadline is not None and core.clock.monotonic() >= request.deadline:
                raise _DeadlinePassed
            written = True

        body = UnlockRequest(slot.board_slot, request.window_s, request.token)
        try:
            reply = await core.request(
                run.link,
                Command.UNLOCK,
                body,
                priority=PRIORITY_EJECT,
                check_before_write=check_deadline,
            )
        except _DeadlinePassed:
            if not written:
                return "", self.reject(request, slot, EjectRejectReason.EXPIRED)
            return "unknown", None
        except BoardRejectedError as exc:
            return "", self._status_result(request, slot, exc)
        except NotConnectedError as exc:
            if not written:
                return "", self.fail(request, slot, EjectFailReason.BOARD_OFFLINE, detail=str(exc))
            return "unknown", None
        except BridgeError:
            return "unknown", None
        if not isinstance(reply, UnlockResult) or reply.token != request.token:
            return "unknown", None
        if reply.result is UnlockCode.LOCK_FAULT:
            detail = "lock did not open"
            return "", self.fail(request, slot, EjectFailReason.LOCK_FAULT, detail=detail)
        logger.info("slot %d opened for token %d", slot.slot, request.token)
        return "opened", None

    def _status_result(
        self, request: EjectRequest, slot: SlotModel, exc: BoardRejectedError
    ) -> EjectResult:
        error = exc.error
        if isinstance(error, BoardBusyError):
            return self.reject(request, slot, EjectRejectReason.SLOT_BUSY)
        if isinstance(error, NoBankError):
            return self.reject(request, slot, EjectRejectReason.SLOT_EMPTY)
        if isinstance(error, SlotFaultError):
            return self.fail(request, slot, EjectFailReason.LOCK_FAULT, detail=str(error))
        return self.fail(request, slot, EjectFailReason.BOARD_ERROR, detail=str(error))

    async def _follow(self, run: _Run, *, quick: bool) -> EjectResult | None:
        """Wait for the token's outcome; return None when the board proved it never ran it.

        With `quick` the board is asked at once, because the UNLOCK got no reply.
        """
        core = self._core
        future = run.waiter.future
        while True:
            remaining = max(0.0, run.give_up_at - core.clock.monotonic())
            wait_s = 0.0 if quick else min(FOLLOW_WAIT_S, remaining)
            quick = False
            done = await wait_future(core.clock, future, wait_s)
            if done is not None:
                return done
            status, boot = await self._query(run)
            # A None result in the waiter means the poller saw the board reboot.
            rebooted = future.done() or (run.boot is not None and boot not in (None, run.boot))
            if status is not None:
                outcome = self._from_token_state(run, status, rebooted)
                if status.state is TokenState.WINDOW_OPEN:
                    run.slot.settle_until = core.clock.monotonic() + core.config.settle_s
                    await core.publish("lock opened")
                if outcome is not None or (status.state is TokenState.UNKNOWN and not rebooted):
                    return outcome
            if core.clock.monotonic() >= run.give_up_at:
                if rebooted:
                    reason = EjectFailReason.BOARD_ERROR
                elif status is None:
                    reason = EjectFailReason.BOARD_OFFLINE
                else:
                    reason = EjectFailReason.TIMEOUT
                return self._uncertain(run, reason)
            if status is None:
                await core.clock.sleep(QUERY_INTERVAL_S)

    async def _query(self, run: _Run) -> tuple[UnlockStatus | None, int | None]:
        """Ask the board about the token, then its boot_count: a reboot voids UNKNOWN."""
        core = self._core
        token = run.request.token
        try:
            reply = await core.request(
                run.link, Command.QUERY_UNLOCK, TokenRef(token), priority=PRIORITY_EJECT
            )
            identity = await core.request(
                run.link, Command.IDENTIFY, Empty(), priority=PRIORITY_EJECT
            )
        except BridgeError as exc:
            logger.debug("QUERY_UNLOCK of token %d failed: %s", token, exc)
            return None, None
        boot = identity.boot_count if isinstance(identity, Identity) else None
        return (reply if isinstance(reply, UnlockStatus) else None), boot

    def _from_token_state(
        self, run: _Run, status: UnlockStatus, rebooted: bool
    ) -> EjectResult | None:
        request, slot, waiter = run.request, run.slot, run.waiter
        state = status.state
        if state is TokenState.WINDOW_OPEN:
            slot.phase = SlotState.AWAITING_TAKE
            return None
        if state is TokenState.UNKNOWN:
            return self._uncertain(run, EjectFailReason.BOARD_ERROR) if rebooted else None
        taken = eject_result(
            self._core,
            request,
            slot,
            outcome=EjectOutcome.TAKEN,
            bank_id=bank_id_hex(status.bank_id) or waiter.bank_id,
            charge=waiter.charge,
            temperature_c=waiter.temperature_c,
        )
        if state is TokenState.TAKEN:
            return taken
        if state is TokenState.NOT_TAKEN:
            return replace(taken, outcome=EjectOutcome.NOT_TAKEN)
        return replace(taken, outcome=EjectOutcome.FAILED, fail_reason=EjectFailReason.LOCK_FAULT)

    def _uncertain(self, run: _Run, reason: EjectFailReason) -> EjectResult:
        token, slot = run.request.token, run.slot
        self._core.remember_uncertain(token, slot.slot)
        logger.warning("eject of slot %d, token %d: outcome unknown (%s)", slot.slot, token, reason)
        detail = "the unlock may have run but its outcome is unknown"
        return self.fail(run.request, slot, reason, uncertain=True, detail=detail)

    async def finish(self, result: EjectResult, *, emitted: bool = False) -> EjectResult:
        core = self._core
        core.remember_outcome(result)
        if not emitted:
            await core.emit(EjectFinished(result=result, at=result.finished_at))
        await core.publish(f"eject {result.outcome}")
        return result
