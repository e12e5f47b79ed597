"""The slot driver interface the daemon uses, and the factory that picks one by protocol."""

from __future__ import annotations

from typing import Protocol

from firmware_bridge.bridge import Bridge
from firmware_bridge.clock import Clock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.drivers.gzxj import GzxjDriver
from firmware_bridge.drivers.s1tt import S1ttDriver
from firmware_bridge.events import EventSink
from firmware_bridge.results import EjectResult, SelfTestReport
from firmware_bridge.snapshot import CabinetSnapshot
from firmware_bridge.stats import BusStats
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import PortOpener


class SlotDriver(Protocol):
    """Interface the daemon needs from the slot hardware, whatever protocol it speaks."""

    async def run(self) -> None: ...

    async def wait_ready(self, timeout: float) -> None: ...  # noqa: ASYNC109 (public API)

    def snapshot(self) -> CabinetSnapshot: ...

    def stats(self) -> BusStats: ...

    def occupancy(self) -> dict[int, tuple[bool, str | None]]: ...

    def expect_eject(self) -> None:
        """Reserve the line for an eject command that is still being checked and stored."""
        ...

    def drop_expected_eject(self) -> None:
        """End the reservation of `expect_eject`: the command turned out to be no new eject."""
        ...

    async def eject(
        self,
        slot: int | None,
        token: int,
        *,
        window_s: int | None = None,
        deadline: float | None = None,
        maintenance: bool = False,
    ) -> EjectResult: ...

    async def resolve_eject(
        self, slot: int | None, token: int, *, deadline: float | None
    ) -> EjectResult: ...

    async def set_slot_disabled(self, slot: int, disabled: bool, reason: str) -> None: ...

    async def lock(self, slot: int) -> None: ...

    async def self_test(self, slot: int) -> SelfTestReport: ...

    async def set_charging(self, slot: int, on: bool) -> None: ...


def create_bridge(
    config: BridgeConfig,
    sink: EventSink,
    store: BridgeStore,
    clock: Clock | None = None,
    *,
    opener: PortOpener | None = None,
) -> SlotDriver:
    """Return the driver for `config.protocol`; "native" is the slot-bus `Bridge` unchanged.

    `opener` replaces the serial port, as tests do with in-memory lines.
    """
    if config.protocol == "gzxj":
        return GzxjDriver(config, sink, store, clock, opener=opener)
    if config.protocol == "s1tt":
        return S1ttDriver(config, sink, store, clock, opener=opener)
    return Bridge(config, sink, store, clock, opener=opener)
