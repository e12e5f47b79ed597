"""The bridge on a real pseudo-terminal: open, lose and reopen the port, echo, busy port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import serial

from cabinet_sim import Cabinet, MonotonicClock
from cabinet_sim.config import FaultRates
from cabinet_sim.transports import PtyTransport
from firmware_bridge import (
    BackoffConfig,
    BankReturned,
    Bridge,
    FaultRaised,
    MemoryStore,
    PortBusyError,
    SlotStateChanged,
    StockChanged,
    open_link,
)
from protocol.cabinet import EjectOutcome, FaultKind, LinkState, SlotState
from tests.firmware_bridge.conftest import (
    WAIT_S,
    RecordingSink,
    bridge_config,
    running,
    sim_config,
)

FAST_REOPEN = BackoffConfig(initial_s=0.05, max_s=0.2, jitter=0.2)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def pty_rig(
    tmp_path: Path, sim_overrides: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[tuple[Cabinet, Bridge, RecordingSink, PtyTransport]]:
    sim = sim_config(**(sim_overrides or {}))
    cabinet = Cabinet(sim, clock=MonotonicClock())
    sink = RecordingSink()
    async with PtyTransport(cabinet, link_path=tmp_path / "ttyCAB") as pty:
        settings = bridge_config(pty.device_path, sim, reopen_backoff=FAST_REOPEN, **config)
        bridge = Bridge(settings, sink, MemoryStore())
        async with running(bridge):
            await bridge.wait_ready(WAIT_S)
            yield cabinet, bridge, sink, pty


async def test_pty_return_and_eject(tmp_path: Path) -> None:
    async with pty_rig(tmp_path, stopbits=2) as (cabinet, bridge, sink, _):
        cabinet.insert_bank(2, charge=97.0)
        await sink.wait_for(BankReturned, lambda e: e.slot == 2)
        await sink.wait_for(StockChanged, lambda e: e.rentable == 1)
        eject = asyncio.create_task(bridge.eject(None, 11, window_s=5))
        await sink.wait_for(
            SlotStateChanged, lambda e: e.slot == 2 and e.state is SlotState.AWAITING_TAKE
        )
        cabinet.take(2)
        result = await eject

        assert result.outcome is EjectOutcome.TAKEN
        assert bridge.stats().crc_errors == 0


async def test_port_vanish_loop_keeps_fds_flat(tmp_path: Path) -> None:
    async with pty_rig(tmp_path) as (cabinet, bridge, sink, _):
        baseline = open_fds()

        def losses() -> int:
            return len([e for e in sink.of(FaultRaised) if e.kind is FaultKind.SERIAL_PORT_LOST])

        for cycle in range(1, 6):
            cabinet.port_down()
            started = time.monotonic()
            expected = cycle
            await sink.wait_until(lambda: losses() == expected, within=2.0)  # noqa: B023
            assert time.monotonic() - started < 2.0
            cabinet.port_up()
            await sink.wait_until(
                lambda: all(b.link is LinkState.ONLINE for b in bridge.snapshot().boards)
            )

        assert open_fds() == baseline
        assert bridge.stats().reopens == 5
        assert bridge.snapshot().port_open


async def test_busy_port_is_clear_error(tmp_path: Path) -> None:
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    async with PtyTransport(cabinet, link_path=tmp_path / "ttyCAB") as pty:
        holder = serial.Serial(pty.device_path, exclusive=True)
        try:
            with pytest.raises(PortBusyError, match="in use by another process"):
                await open_link(pty.device_path, baudrate=115200, stopbits=1, check_interval_s=1)
            sink = RecordingSink()
            settings = bridge_config(pty.device_path, cabinet.config, reopen_backoff=FAST_REOPEN)
            bridge = Bridge(settings, sink, MemoryStore())
            async with running(bridge):
                with pytest.raises(TimeoutError):
                    await bridge.wait_ready(0.3)
                holder.close()
                await bridge.wait_ready(WAIT_S)
                assert bridge.snapshot().port_open
        finally:
            holder.close()


async def test_echo_is_discarded(tmp_path: Path) -> None:
    overrides = {"faults": FaultRates(local_echo=True)}
    async with pty_rig(tmp_path, overrides) as (cabinet, bridge, sink, _):
        cabinet.insert_bank(5, charge=90.0)
        await sink.wait_for(BankReturned, lambda e: e.slot == 5)
        stats = bridge.stats()

        assert stats.echoes > 0
        assert stats.foreign_frames == 0
        assert stats.unmatched_replies == 0
        assert stats.echoes >= stats.frames_sent - 1  # one request may still be in flight
        assert [b.link for b in bridge.snapshot().boards] == [LinkState.ONLINE] * 2
