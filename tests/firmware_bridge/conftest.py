"""Fixtures: a simulated cabinet on an in-memory line or a pseudo-terminal, and a running bridge."""

from __future__ import annotations

import asyncio
import contextlib
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
    MemoryStore,
    PortError,
)
from firmware_bridge.transport import SocketLink

E = TypeVar("E")

WAIT_S = 5.0
"""Longest wait for an expected event; a passing test sees it far sooner."""


class RecordingSink:
    """Keeps every event and wakes waiters when one arrives."""

    def __init__(self) -> None:
        self.events: list[CabinetEvent] = []
        self._changed = asyncio.Condition()

    async def handle(self, event: CabinetEvent) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] = lambda _: True,
        timeout: float = WAIT_S,
    ) -> E:
        """Return the first event of `kind` matching `predicate`, waiting for it if needed."""

        def found() -> E | None:
            for event in self.events:
                if isinstance(event, kind) and predicate(event):
                    return event
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result


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


def memory_opener(line: MemoryLink) -> Callable[[], Any]:
    async def open_line() -> ByteLink:
        try:
            reader, writer = await line.open_master_streams()
        except ConnectionError as exc:
            raise PortError(str(exc)) from exc
        return SocketLink(reader, writer, "memory")

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
    **config: Any,
) -> AsyncIterator[Rig]:
    """A cabinet on an in-memory line and a running bridge, ready."""
    sim = sim or sim_config()
    cabinet = Cabinet(sim, clock=MonotonicClock(speed))
    sink = RecordingSink()
    store = store or MemoryStore()
    async with MemoryLink(cabinet, shaping=shaping) as line:
        bridge = Bridge(
            bridge_config("memory", sim, **config), sink, store, opener=memory_opener(line)
        )
        async with running(bridge):
            await bridge.wait_ready(WAIT_S)
            yield Rig(cabinet, bridge, sink, store, line)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()
