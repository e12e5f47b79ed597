"""What the field-protocol drivers share: the cabinet model, the port loop and eject results.

A driver keeps the same `BridgeCore` state as the native bridge (model, links, remembered
outcomes, ordered event emission), so `snapshot()` and the events look the same to the daemon.
The core's slot-bus client is never used by a driver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from firmware_bridge.clock import Clock, SystemClock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.core import BridgeCore
from firmware_bridge.eject import EjectRequest, check_arguments, choose_slot, failed, rejected
from firmware_bridge.errors import BridgeError, PortError, PortLostError, UnknownSlotError
from firmware_bridge.events import EjectFinished, EventSink, FaultRaised
from firmware_bridge.links import backoff_delay
from firmware_bridge.model import SlotModel
from firmware_bridge.results import EjectResult
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import ByteLink, PortOpener, open_link
from firmware_bridge.views import CabinetViews
from protocol.cabinet import EjectFailReason, EjectRejectReason, FaultKind

logger = logging.getLogger(__name__)


class UnsupportedCommandError(BridgeError):
    """The slot hardware's protocol has no such command."""


class DriverBase(CabinetViews):
    """State, port supervision and the read-only API common to every field-protocol driver."""

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
        self._opener = opener or self._open_configured_port
        self._running: dict[int, asyncio.Future[EjectResult]] = {}

    async def _open_configured_port(self) -> ByteLink:
        config = self._config
        return await open_link(
            config.port,
            baudrate=config.baudrate,
            stopbits=config.stopbits,
            check_interval_s=config.port_check_interval_s,
        )

    def _load_stored_state(self) -> None:
        core = self._core
        for number, reason in core.store.load_disabled_slots().items():
            slot = core.model.slot(number)
            if slot is not None:
                slot.disabled_reason = reason

    async def _serve_port(self, serve_link: Callable[[ByteLink], Awaitable[None]]) -> None:
        """Keep the port open: reopen after a loss with capped exponential backoff and jitter."""
        core = self._core
        failures = 0
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
            failures = 0
            logger.info("serial port %s open", link.description)
            core.port_open = True
            try:
                await serve_link(link)
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
            await self._mark_all_offline("serial port lost")
            await self._clock.sleep(backoff_delay(self._config.reopen_backoff, 0, core.rng))

    async def _mark_all_offline(self, reason: str) -> None:
        core = self._core
        for link in core.links:
            await core.emit_link_change(link, link.mark_offline(reason))
        await core.publish(reason)

    async def set_slot_disabled(self, slot: int, disabled: bool, reason: str) -> None:
        """Disable or enable a slot for renting; the store keeps it across restarts."""
        found = self._core.model.slot(slot)
        if found is None:
            raise UnknownSlotError(f"slot {slot} does not exist")
        found.disabled_reason = reason if disabled else None
        self._core.store.save_disabled_slot(slot, reason if disabled else None)
        await self._core.publish(f"slot {'disabled' if disabled else 'enabled'}: {reason}")

    def expect_eject(self) -> None:
        """Nothing to prepare: these lines serve requests in arrival order.

        NOTE: a poll started while an eject command is checked still goes first here; only
        the slot-bus bridge reserves the line (`BusClient.reserve_for_eject`).
        """

    def drop_expected_eject(self) -> None:
        """Do nothing: `expect_eject` reserved nothing on these lines."""

    # Eject bookkeeping

    def _order(
        self, token: int, window_s: int | None, deadline: float | None, maintenance: bool
    ) -> EjectRequest:
        order = EjectRequest(token, window_s or self._config.unlock_window_s, deadline, maintenance)
        check_arguments(order.token, order.window_s)
        return order

    def _reject(
        self, order: EjectRequest, slot: SlotModel | None, reason: EjectRejectReason
    ) -> EjectResult:
        return rejected(self._core, order, slot, reason)

    def _fail(
        self,
        order: EjectRequest,
        slot: SlotModel | None,
        reason: EjectFailReason,
        *,
        uncertain: bool = False,
        detail: str = "",
    ) -> EjectResult:
        return failed(self._core, order, slot, reason, uncertain=uncertain, detail=detail)

    def _check_slot(
        self, order: EjectRequest, number: int | None
    ) -> tuple[SlotModel | None, EjectResult | None]:
        return choose_slot(self._core, order, number)

    async def _once(self, token: int, run: Callable[[], Awaitable[EjectResult]]) -> EjectResult:
        """Run an eject once per token: a finished token returns its result, a running one joins."""
        known = self._core.outcomes.get(token)
        if known is not None:
            return known
        running = self._running.get(token)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[EjectResult] = asyncio.get_running_loop().create_future()
        self._running[token] = future
        try:
            result = await run()
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved when nobody joined
            raise
        finally:
            del self._running[token]

    async def _finish(self, result: EjectResult, slot: SlotModel | None) -> EjectResult:
        """Remember the result, end the slot's eject phase and emit the one EjectFinished."""
        core = self._core
        core.remember_outcome(result)
        if slot is not None:
            slot.phase = None
        logger.info(
            "eject token %d slot %s: %s %s%s",
            result.token,
            result.slot,
            result.outcome,
            result.fail_reason or result.reject_reason or "",
            " (uncertain)" if result.uncertain else "",
        )
        await core.emit(EjectFinished(result=result, at=self._clock.wall()))
        await core.publish(f"eject {result.outcome}")
        return result
