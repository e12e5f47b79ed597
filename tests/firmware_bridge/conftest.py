"""Fixtures: a simulated cabinet on an in-memory line or a pseudo-terminal, and a running bridge."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from cabinet_sim import Cabinet, MonotonicClock, SimConfig
from cabinet_sim.config import BankMix
from cabinet_sim.transports import MemoryLink, Shaping
from firmware_bridge import (
    BoardSpec,
    Bridge,
    BridgeConfig,
    ByteLink,
    CabinetEvent,
    Clock,
    MemoryStore,
    PortError,
)
from firmware_bridge.transport import SocketLink
from protocol.slotbus import Command, Deframer, Frame

E = TypeVar("E")

WAIT_S = 5.0
"""Longest wait for an expected event; in a passing test it arrives far sooner."""


class RecordingSink:
    """Keeps every event and wakes waiters when one arrives."""

    def __init__(self) -> None:
        self.events: list[CabinetEvent] = []
        self._changed = asyncio.Condition()
        self.refuse: set[type] = set()  # event types that `handle` fails on, as a full outbox
        self.refused = asyncio.Event()

    async def handle(self, event: CabinetEvent) -> None:
        if type(event) in self.refuse:
            self.refused.set()
            raise RuntimeError("outbox full")
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] = lambda _: True,
        within: float = WAIT_S,
    ) -> E:
        """Return the first event of `kind` matching `predicate`, waiting for it if needed."""

        def found() -> E | None:
            for event in self.events:
                if isinstance(event, kind) and predicate(event):
                    return event
            return None

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result

    async def wait_until(self, condition: Callable[[], bool], within: float = WAIT_S) -> None:
        """Wait until `condition` holds, checking it again after every new event."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)


def sim_config(**overrides: Any) -> SimConfig:
    """Two boards of four slots, empty, no pacing: fast and predictable."""
    values: dict[str, Any] = {
        "boards": 2,
        "slots_per_board": 4,
        "pacing": False,
        "banks": BankMix(fill_ratio=0.0),
    }
    values.update(overrides)
    return SimConfig(**values)


def bridge_config(port: str, sim: SimConfig, **overrides: Any) -> BridgeConfig:
    values: dict[str, Any] = {
        "port": port,
        "boards": tuple(
            BoardSpec(address=address, slot_count=sim.slots_per_board)
            for address in sim.board_addresses()
        ),
        "event_poll_interval_s": 0.05,
        "status_interval_s": 0.5,
        "bank_interval_s": 2.0,
        "bus_budget": 1.0,
        "settle_s": 0.2,
        "eject_resolve_margin_s": 1.0,
    }
    values.update(overrides)
    return BridgeConfig(**values)


def memory_opener(
    line: MemoryLink, wrap: Callable[[ByteLink], ByteLink] | None = None
) -> Callable[[], Any]:
    """Open the master end of the in-memory line, optionally through a test wrapper."""

    async def open_line() -> ByteLink:
        try:
            reader, writer = await line.open_master_streams()
        except ConnectionError as exc:
            raise PortError(str(exc)) from exc
        link: ByteLink = SocketLink(reader, writer, "memory")
        return wrap(link) if wrap is not None else link

    return open_line


@dataclass
class Rig:
    cabinet: Cabinet
    bridge: Bridge
    sink: RecordingSink
    store: MemoryStore
    line: MemoryLink | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running(bridge: Bridge) -> AsyncIterator[asyncio.Task[None]]:
    """Run the bridge for the duration of the block, then cancel and await it."""
    task = asyncio.create_task(bridge.run(), name="bridge-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def memory_rig(
    sim: SimConfig | None = None,
    *,
    shaping: Shaping | None = None,
    store: MemoryStore | None = None,
    speed: float = 1.0,
    wrap: Callable[[ByteLink], ByteLink] | None = None,
    clock: Clock | None = None,
    cabinet: Cabinet | None = None,
    **config: Any,
) -> AsyncIterator[Rig]:
    """A cabinet on an in-memory line and a running bridge, ready.

    Pass `cabinet` (and `store`) again to model a restart of the gateway.
    """
    if cabinet is None:
        cabinet = Cabinet(sim or sim_config(), clock=MonotonicClock(speed))
    sim = cabinet.config
    sink = RecordingSink()
    store = MemoryStore() if store is None else store
    async with MemoryLink(cabinet, shaping=shaping) as line:
        settings = bridge_config("memory", sim, **config)
        bridge = Bridge(settings, sink, store, clock, opener=memory_opener(line, wrap))
        async with running(bridge):
            await bridge.wait_ready(WAIT_S)
            yield Rig(cabinet, bridge, sink, store, line)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


class FilteringLink:
    """Wraps a ByteLink: counts the requests written and drops chosen replies.

    `drop_replies[command]` is how many of the next replies to that command are lost, as if
    the board acted but its reply never arrived.
    """

    def __init__(self, inner: ByteLink) -> None:
        self.inner = inner
        self.written: list[Frame] = []
        self.drop_replies: dict[Command, int] = {}
        self.swallow_writes: set[Command] = set()  # requests that never reach the line
        self.on_write: Callable[[Frame], None] | None = None
        self._deframer = Deframer()

    @property
    def description(self) -> str:
        return self.inner.description

    async def read(self) -> bytes:
        while True:
            data = await self.inner.read()
            kept = bytearray()
            for frame in self._deframer.feed(data):
                command = Command(frame.command_id) if frame.is_response else None
                if command is not None and self.drop_replies.get(command, 0) > 0:
                    self.drop_replies[command] -= 1
                    continue
                kept += frame.encode()
            if kept:
                return bytes(kept)

    async def write(self, data: bytes) -> None:
        for frame in Deframer().feed(data):
            self.written.append(frame)
            if self.on_write is not None:
                self.on_write(frame)
            if frame.command_id in self.swallow_writes:
                return
        await self.inner.write(data)

    def close(self) -> None:
        self.inner.close()

    def count(self, command: Command) -> int:
        return sum(1 for frame in self.written if frame.command_id == command)


class Wrapped:
    """Keeps the last FilteringLink made by `wrap`, so a test can reach it."""

    def __init__(self) -> None:
        self.link: FilteringLink | None = None

    def __call__(self, inner: ByteLink) -> ByteLink:
        self.link = FilteringLink(inner)
        return self.link

    @property
    def current(self) -> FilteringLink:
        assert self.link is not None, "the bridge has not opened the line yet"
        return self.link


class OffsetClock:
    """System time plus an offset that a test can move forward (for deadlines)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
