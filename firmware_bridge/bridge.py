"""The bridge: owns the serial port, polls the boards and runs ejects."""

from __future__ import annotations

import logging

from firmware_bridge.clock import Clock, SystemClock
from firmware_bridge.config import BridgeConfig
from firmware_bridge.events import EventSink
from firmware_bridge.results import EjectResult, SelfTestReport
from firmware_bridge.snapshot import CabinetSnapshot
from firmware_bridge.stats import BusStats
from firmware_bridge.store import BridgeStore
from firmware_bridge.transport import PortOpener

logger = logging.getLogger(__name__)


class Bridge:
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
        self._sink = sink
        self._store = store
        self._clock = clock or SystemClock()
        self._opener = opener

    async def run(self) -> None:
        """Open the port, poll the boards and keep going until cancelled."""
        raise NotImplementedError

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (public API)
        """Wait until every board was read once or found offline; raise TimeoutError."""
        raise NotImplementedError

    def snapshot(self) -> CabinetSnapshot:
        raise NotImplementedError

    def stats(self) -> BusStats:
        raise NotImplementedError

    async def eject(
        self,
        slot: int | None,
        token: int,
        *,
        window_s: int | None = None,
        deadline: float | None = None,
        maintenance: bool = False,
    ) -> EjectResult:
        """Eject from `slot`, or from the best rentable slot when `slot` is None."""
        raise NotImplementedError

    async def resolve_eject(
        self, slot: int | None, token: int, *, deadline: float | None
    ) -> EjectResult:
        """Learn the outcome of an eject cut off by a restart; eject only if it never ran."""
        raise NotImplementedError

    async def set_slot_disabled(self, slot: int, disabled: bool, reason: str) -> None:
        raise NotImplementedError

    async def lock(self, slot: int) -> None:
        raise NotImplementedError

    async def self_test(self, slot: int) -> SelfTestReport:
        raise NotImplementedError

    async def set_charging(self, slot: int, on: bool) -> None:
        raise NotImplementedError
