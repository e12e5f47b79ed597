"""The bridge: owns the serial port, polls the boards and runs ejects."""

from __future__ import annotations

import asyncio
import logging

from firmware_bridge.bus import PRIORITY_COMMAND, PRIORITY_EJECT
from firmware_bridge.clock import Clock, SystemClock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.core import BridgeCore
from firmware_bridge.eject import Ejector, EjectRequest, check_arguments
from firmware_bridge.errors import (
    BoardOfflineError,
    BridgeError,
    ChargingRefusedError,
    PortError,
    PortLostError,
    UnknownSlotError,
)
from firmware_bridge.events import EventSink, FaultRaised
from firmware_bridge.links import BoardLink, backoff_delay
from firmware_bridge.model import SlotModel
from firmware_bridge.poller import Poller
from firmware_bridge.results import EjectResult, SelfTestReport
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import ByteLink, PortOpener, open_link
from firmware_bridge.views import CabinetViews
from protocol.cabinet import EjectFailReason, EjectRejectReason, FaultKind, LinkState
from protocol.slotbus import (
    ChargingRequest,
    Command,
    LockResult,
    SelfTestCheck,
    SelfTestResult,
    SlotRef,
    TokenRef,
    TokenState,
    UnlockStatus,
)

logger = logging.getLogger(__name__)


class Bridge(CabinetViews):
    """The only owner of the slot bus; see docs/firmware-bridge.md for states and guarantees."""

    def __init__(
        self,
        config: BridgeConfig,
        sink: EventSink,
        store: BridgeStore,
        clock: Clock | None = None,
        *,
        opener: PortOpener | None = None,
    ) -> None:
        self._config = config
        self._clock = clock or SystemClock()
        self._core = BridgeCore(config, sink, store, self._clock)
        self._poller = Poller(self._core)
        self._ejector = Ejector(self._core)
        self._opener = opener or self._open_configured_port

    async def _open_configured_port(self) -> ByteLink:
        config = self._config
        return await open_link(
            config.port,
            baudrate=config.baudrate,
            stopbits=config.stopbits,
            check_interval_s=config.port_check_interval_s,
        )

    async def run(self) -> None:
        """Open the port, poll the boards and keep going until cancelled."""
        core = self._core
        for slot_number, reason in core.store.load_disabled_slots().items():
            slot = core.model.slot(slot_number)
            if slot is not None:
                slot.disabled_reason = reason
        self._poller.watermarks = core.store.load_event_watermarks()
        for slot_number, (present, bank_id) in core.store.load_occupancy().items():
            slot = core.model.slot(slot_number)
            if slot is not None:
                slot.present = present
                slot.bank_id = bank_id if present else None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._serve_port(), name="bridge-port")
            tasks.create_task(self._poller.run(), name="bridge-poller")

    async def _serve_port(self) -> None:
        """Keep the port open: reopen after a loss with capped exponential backoff and jitter."""
        core = self._core
        failures = 0
        opened_before = False
        while True:
            try:
                link = await self._opener()
            except PortError as exc:
                if failures == 0 or failures % 10 == 0:
                    logger.error("serial port %s: %s", self._config.port, exc)
                failures += 1
                await self._clock.sleep(
                    backoff_delay(self._config.reopen_backoff, failures - 1, core.rng)
                )
                continue
            if opened_before:
                core.bus.counters.reopens += 1
            opened_before = True
            failures = 0
            logger.info("serial port %s open", link.description)
            await self._serve_link(link)
            await self._clock.sleep(backoff_delay(self._config.reopen_backoff, 0, core.rng))

    async def _serve_link(self, link: ByteLink) -> None:
        core = self._core
        core.port_open = True
        for board in core.links:
            board.next_probe_at = 0.0
            board.probe_attempts = 0
        core.poll_wakeup.set()
        try:
            await core.bus.pump(link)
        except PortLostError as exc:
            logger.warning("serial port lost: %s; reopening", exc)
            await core.emit(
                FaultRaised(
                    kind=FaultKind.SERIAL_PORT_LOST,
                    slot=0,
                    board=None,
                    detail=str(exc),
                    key=None,
                    at=self._clock.wall(),
                )
            )
        finally:
            link.close()
            core.port_open = False
        for board in core.links:
            await core.emit_link_change(board, board.mark_offline("serial port lost"))
        await core.publish("serial port lost")

    def expect_eject(self) -> None:
        """Keep the bus free for an eject that is about to start; see `reserve_for_eject`."""
        self._core.bus.reserve_for_eject()

    def drop_expected_eject(self) -> None:
        """Let polls use the bus again: the command announced by `expect_eject` is no eject."""
        self._core.bus.release_eject_hold()

    async def eject(
        self,
        slot: int | None,
        token: int,
        *,
        window_s: int | None = None,
        deadline: float | None = None,
        maintenance: bool = False,
    ) -> EjectResult:
        """Eject from `slot`, or from the best rentable slot when `slot` is None.

        `deadline` is in the bridge clock's monotonic seconds: no UNLOCK is written after it.
        Raise ValueError for a token outside 1..2^32-1 or a window outside 1..120 s.
        """
        request = EjectRequest(
            token=token,
            window_s=window_s or self._config.unlock_window_s,
            deadline=deadline,
            maintenance=maintenance,
        )
        return await self._ejector.run(request, slot)

    async def resolve_eject(
        self, slot: int | None, token: int, *, deadline: float | None
    ) -> EjectResult:
        """Learn the outcome of an eject cut off by a restart; eject only if it never ran.

        QUERY_UNLOCK comes first and never acts. The eject is performed only when every board
        asked reports the token UNKNOWN, none rebooted since the stored watermark, and the
        deadline has not passed. Otherwise the result is the board's, or FAILED(interrupted).
        """
        core = self._core
        request = EjectRequest(token, self._config.unlock_window_s, deadline, False)
        check_arguments(token, request.window_s)
        known = core.outcomes.get(token)
        if known is not None and not known.uncertain:
            return known
        boards = self._boards_for(slot)
        if boards is None:
            return await self._ejector.finish(
                self._ejector.reject(request, None, EjectRejectReason.UNKNOWN_SLOT)
            )
        all_unknown = True
        for link in boards:
            status = await self._query_token(link, token)
            if status is None or not self._same_boot(link):
                all_unknown = False
                continue
            if status.state is not TokenState.UNKNOWN:
                return await self._ejector.resolve_known(request, link, status)
        expired = deadline is not None and self._clock.monotonic() >= deadline
        if all_unknown and not expired:
            return await self._ejector.run(request, slot)
        detail = "the eject was interrupted and its outcome cannot be learned"
        result = self._ejector.fail(
            request,
            core.model.slot(slot) if slot else None,
            EjectFailReason.INTERRUPTED,
            uncertain=not expired or not all_unknown,
            detail=detail,
        )
        return await self._ejector.finish(result)

    def _boards_for(self, slot: int | None) -> list[BoardLink] | None:
        core = self._core
        if slot is None:
            return list(core.links)
        found = core.model.slot(slot)
        return [core.model.link_of(found)] if found is not None else None

    def _same_boot(self, link: BoardLink) -> bool:
        """Return whether the board kept the boot recorded in the previous run's watermark."""
        identity = link.identity
        return identity is not None and link.stored_boot_count == identity.boot_count

    async def _query_token(self, link: BoardLink, token: int) -> UnlockStatus | None:
        if link.state is LinkState.OFFLINE:
            return None
        try:
            reply = await self._core.request(
                link, Command.QUERY_UNLOCK, TokenRef(token), priority=PRIORITY_EJECT
            )
        except BridgeError as exc:
            logger.warning(
                "QUERY_UNLOCK of token %d on board %d failed: %s", token, link.address, exc
            )
            return None
        return reply if isinstance(reply, UnlockStatus) else None

    def _slot(self, number: int) -> tuple[SlotModel, BoardLink]:
        slot = self._core.model.slot(number)
        if slot is None:
            raise UnknownSlotError(
                f"slot {number} does not exist; slots are 1..{self._config.slot_count}"
            )
        link = self._core.model.link_of(slot)
        if link.state is LinkState.OFFLINE:
            raise BoardOfflineError(f"board {link.address} of slot {number} is offline")
        return slot, link

    async def set_slot_disabled(self, slot: int, disabled: bool, reason: str) -> None:
        """Disable or enable a slot for renting; the store keeps it across restarts."""
        found = self._core.model.slot(slot)
        if found is None:
            raise UnknownSlotError(f"slot {slot} does not exist")
        found.disabled_reason = reason if disabled else None
        self._core.store.save_disabled_slot(slot, reason if disabled else None)
        await self._core.publish(f"slot {'disabled' if disabled else 'enabled'}: {reason}")

    async def lock(self, slot: int) -> None:
        """Lock a slot (ends a running take window); raise BoardRejectedError on SLOT_FAULT."""
        found, link = self._slot(slot)
        reply = await self._core.request(
            link, Command.LOCK, SlotRef(found.board_slot), priority=PRIORITY_COMMAND
        )
        if isinstance(reply, LockResult):
            logger.info("slot %d locked: %s", slot, reply.lock.name)
        await self._core.publish("lock")

    async def self_test(self, slot: int) -> SelfTestReport:
        found, link = self._slot(slot)
        reply = await self._core.request(
            link, Command.SELF_TEST, SlotRef(found.board_slot), priority=PRIORITY_COMMAND
        )
        failed = reply.failed if isinstance(reply, SelfTestResult) else SelfTestCheck(0)
        return SelfTestReport(
            slot=slot,
            passed=not failed,
            failed_checks=tuple(flag.name or "" for flag in failed),
            at=self._clock.wall(),
        )

    async def set_charging(self, slot: int, on: bool) -> None:
        """Switch charging; raise ChargingRefusedError to switch on a bank at the heat limit."""
        found, link = self._slot(slot)
        temperature = self._core.model.temperature(found)
        if on and temperature is not None and temperature >= self._config.overheat_limit_c:
            raise ChargingRefusedError(
                f"slot {slot}: bank at {temperature:.1f} degC, limit "
                f"{self._config.overheat_limit_c:.1f} degC"
            )
        await self._core.request(
            link,
            Command.SET_CHARGING,
            ChargingRequest(found.board_slot, on),
            priority=PRIORITY_COMMAND,
        )
        found.overheat_hold = False
        self._core.poll_wakeup.set()
