"""The read-only API that the native bridge and the field-protocol drivers share."""

from __future__ import annotations

import asyncio

from firmware_bridge.clock import Clock
from firmware_bridge.core import BridgeCore
from firmware_bridge.model import snapshot_board
from firmware_bridge.snapshot import CabinetSnapshot
from firmware_bridge.stats import BusStats


class CabinetViews:
    """Readiness, snapshot, occupancy and bus statistics, read from a `BridgeCore`."""

    _core: BridgeCore
    _clock: Clock

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (public API)
        """Wait until every board was read once or found offline; raise TimeoutError."""
        async with asyncio.timeout(timeout):
            await self._core.ready.wait()

    def snapshot(self) -> CabinetSnapshot:
        core = self._core
        now = self._clock.monotonic()
        model = core.model
        return CabinetSnapshot(
            port_open=core.port_open,
            boards=tuple(snapshot_board(link) for link in core.links),
            slots=tuple(model.snapshot_slot(slot, now) for slot in model.slots),
            stock=model.stock(now),
            at=self._clock.wall(),
        )

    def occupancy(self) -> dict[int, tuple[bool, str | None]]:
        """Return, per global slot whose presence is known, (bank present, bank id).

        The caller saves it and gives it back through `BridgeStore.load_occupancy`.
        """
        return {
            slot.slot: (slot.present, slot.bank_id if slot.present else None)
            for slot in self._core.model.slots
            if slot.present is not None
        }

    def stats(self) -> BusStats:
        return self._core.bus.stats(tuple(link.address for link in self._core.links))
