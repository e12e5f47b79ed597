"""State shared by the poller, the ejects and the public API, and event emission."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_bridge.bus import PRIORITY_POLL, BusClient
from firmware_bridge.clock import Clock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.errors import BoardRejectedError, RequestTimeoutError, SinkError
from firmware_bridge.events import (
    BoardLinkChanged,
    CabinetEvent,
    EventSink,
    FaultRaised,
    SlotStateChanged,
    StockChanged,
)
from firmware_bridge.links import BoardLink, LinkChange, backoff_delay
from firmware_bridge.model import CabinetModel, SlotModel
from firmware_bridge.results import EjectResult
from firmware_bridge.store import BridgeStore
from protocol.cabinet import FaultKind, LinkState, SlotState
from protocol.slotbus import Command, Message

logger = logging.getLogger(__name__)

REMEMBERED_TOKENS = 256
"""Finished eject results kept, so a repeated token gets its result without a bus request."""


@dataclass(slots=True)
class TokenWaiter:
    """An eject waiting for the terminal board event of its token.

    The future gets the result, or None when the board rebooted and the eject must find out
    what happened by itself.
    """

    slot: SlotModel
    bank_id: str | None
    charge: int | None
    temperature_c: float | None
    future: asyncio.Future[EjectResult | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    finish_emitted: bool = False


class BridgeCore:
    def __init__(
        self,
        config: BridgeConfig,
        sink: EventSink,
        store: BridgeStore,
        clock: Clock,
    ) -> None:
        self.config = config
        self.sink = sink
        self.store = store
        self.clock = clock
        self.bus = BusClient(config, clock)
        self.links: list[BoardLink] = []
        first = 1
        for spec in config.boards:
            self.links.append(BoardLink(spec=spec, first_slot=first))
            first += spec.slot_count
        self.model = CabinetModel(config, self.links)
        self.waiters: dict[int, TokenWaiter] = {}
        self.in_progress: dict[int, asyncio.Future[EjectResult]] = {}
        self.outcomes: OrderedDict[int, EjectResult] = OrderedDict()
        self.uncertain: OrderedDict[int, int] = OrderedDict()  # token -> global slot
        self.poll_wakeup = asyncio.Event()
        self.ready = asyncio.Event()
        self.port_open = False
        self._emit_lock = asyncio.Lock()
        self._cabinet_state = SlotState.UNKNOWN
        self.rng = random.Random()

    def link(self, address: int) -> BoardLink:
        return next(link for link in self.links if link.address == address)

    def retries_for(self, link: BoardLink) -> int:
        """Fewer repeats for an offline board, so it cannot hold up the others."""
        if link.state is LinkState.OFFLINE:
            return self.config.offline_retries
        return self.config.retries

    def remember_outcome(self, result: EjectResult) -> None:
        self.outcomes[result.token] = result
        self.outcomes.move_to_end(result.token)
        while len(self.outcomes) > REMEMBERED_TOKENS:
            self.outcomes.popitem(last=False)

    def remember_uncertain(self, token: int, slot: int) -> None:
        self.uncertain[token] = slot
        while len(self.uncertain) > REMEMBERED_TOKENS:
            self.uncertain.popitem(last=False)

    async def emit(self, event: CabinetEvent) -> None:
        """Hand one event to the sink; events from all tasks reach it one at a time, in order."""
        async with self._emit_lock:
            try:
                await self.sink.handle(event)
            except Exception as exc:
                raise SinkError(f"{type(event).__name__} not handed on: {exc!r}") from exc

    async def emit_link_change(self, link: BoardLink, change: LinkChange | None) -> None:
        if change is None:
            return
        now = self.clock.wall()
        logger.info(
            "board %d link %s -> %s: %s",
            link.address,
            change.previous,
            change.state,
            change.reason or "ok",
        )
        await self.emit(
            BoardLinkChanged(
                board=link.address,
                previous=change.previous,
                state=change.state,
                reason=change.reason,
                at=now,
            )
        )
        if change.state is LinkState.OFFLINE:
            kind, detail = FaultKind.BOARD_OFFLINE, change.reason
        elif change.previous is LinkState.OFFLINE:
            kind, detail = FaultKind.BOARD_ONLINE, "board answers again"
        else:
            return
        await self.emit(
            FaultRaised(kind=kind, slot=0, board=link.address, detail=detail, key=None, at=now)
        )

    def ejecting_on(self, address: int) -> bool:
        """Return whether an eject on a slot of board `address` waits for its outcome."""
        return any(waiter.slot.board == address for waiter in self.waiters.values())

    def hasten_events(self, link: BoardLink) -> None:
        """Poll the board's events at the short interval from now on, starting soon."""
        now = self.clock.monotonic()
        link.active_until = max(link.active_until, now + self.config.idle_after_s)
        soon = now + self.config.event_poll_interval_s
        if link.next_events_at > soon:
            link.next_events_at = soon
            self.poll_wakeup.set()

    def cabinet_state(self) -> SlotState:
        if not self.ready.is_set():
            return SlotState.UNKNOWN
        if not self.port_open or any(link.state is LinkState.OFFLINE for link in self.links):
            return SlotState.FAULTED
        return SlotState.READY

    async def publish(self, reason: str) -> None:
        """Emit SlotStateChanged for every slot whose derived state changed, then StockChanged."""
        now = self.clock.monotonic()
        wall = self.clock.wall()
        cabinet = self.cabinet_state()
        if cabinet is not self._cabinet_state:
            previous, self._cabinet_state = self._cabinet_state, cabinet
            await self.emit(
                SlotStateChanged(slot=0, previous=previous, state=cabinet, reason=reason, at=wall)
            )
        states = [(slot, self.model.state(slot)) for slot in self.model.slots]
        for slot, state in states:
            if state is slot.reported_state:
                continue
            previous, slot.reported_state = slot.reported_state, state
            logger.info("slot %d: %s -> %s (%s)", slot.slot, previous, state, reason)
            await self.emit(
                SlotStateChanged(
                    slot=slot.slot, previous=previous, state=state, reason=reason, at=wall
                )
            )
        stock = self.model.stock(now, states)
        if stock != self.model.reported_stock:
            self.model.reported_stock = stock
            await self.emit(
                StockChanged(
                    rentable=stock.rentable,
                    charging=stock.charging,
                    empty=stock.empty,
                    faulted=stock.faulted,
                    at=wall,
                )
            )

    async def request(
        self,
        link: BoardLink,
        command: Command,
        body: Message,
        *,
        priority: int = PRIORITY_POLL,
        retries: int | None = None,
        check_before_write: Callable[[], None] | None = None,
    ) -> Message:
        """Send a request to a board and keep its link state up to date.

        A timeout counts against the board; a status error shows the board is alive. A lost or
        closed port is not the board's fault and leaves the link state alone.
        """
        try:
            reply = await self.bus.request(
                link.address,
                command,
                body,
                retries=self.retries_for(link) if retries is None else retries,
                priority=priority,
                check_before_write=check_before_write,
            )
        except RequestTimeoutError as exc:
            change = link.record_failure(
                f"no reply to {command.name}",
                self.config.degraded_after,
                self.config.offline_after,
            )
            if link.state is LinkState.OFFLINE:
                self.schedule_probe(link)
            await self.emit_link_change(link, change)
            await self.publish("board link changed")
            raise exc
        except BoardRejectedError:
            await self.emit_link_change(link, link.record_success())
            raise
        await self.emit_link_change(link, link.record_success())
        return reply

    def schedule_probe(self, link: BoardLink) -> None:
        delay = backoff_delay(self.config.probe_backoff, link.probe_attempts, self.rng)
        link.probe_attempts += 1
        link.next_probe_at = self.clock.monotonic() + delay
