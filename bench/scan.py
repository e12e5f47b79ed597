"""scan: a cold read of a 48-slot cabinet's status and bank data over a real pseudo-terminal.

The bridge starts against the simulator (8 boards x 6 slots, every slot holding a bank,
paced at 115200 baud, in a child process) and the clock stops when every board replied to
IDENTIFY and GET_SLOTS and every bank was read (GET_BANKS). The baseline is the wire time
of every byte the bridge wrote and read in that span (10 bits per byte at 8N1), taken from
the bridge's BusStats.

The simulated boards add no turnaround of their own (`turnaround_s` 0), because the
pseudo-terminal and the simulator's event loop already put about 0.4 ms between a request's
last byte and the response. A board's firmware needs about that long. A comparison run with the
simulator's default turnaround (1 ms) is printed as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from bench.result import BenchResult, safe_ratio
from bench.simproc import simulator_process
from cabinet_sim import Cabinet, MonotonicClock, SimConfig
from cabinet_sim.cabinet import TURNAROUND_S as DEFAULT_TURNAROUND_S
from cabinet_sim.config import BankMix
from cabinet_sim.transports import PtyTransport
from firmware_bridge import (
    BankHealthReport,
    BoardSpec,
    Bridge,
    BridgeConfig,
    BusStats,
    CabinetEvent,
    MemoryStore,
)
from firmware_bridge.bus import INTER_FRAME_BYTES
from protocol.slotbus.constants import BAUD_RATE, BITS_PER_BYTE, wire_time_s

BOARDS = 8
SLOTS_PER_BOARD = 6
TARGET_RATIO = 1.15
SCAN_TIMEOUT_S = 30.0
FULL_RUNS = 7
QUICK_RUNS = 3
SIM_LIFETIME_S = 60.0
TURNAROUND_S = 0.0
"""Turnaround the simulated boards add on top of the line's own latency (see above)."""


class ScanSink:
    """Counts the banks read; sets `done` once every slot's bank was read."""

    def __init__(self, banks: int) -> None:
        self._banks = banks
        self.read: set[str] = set()
        self.done = asyncio.Event()

    async def handle(self, event: CabinetEvent) -> None:
        if isinstance(event, BankHealthReport):
            self.read.add(event.bank_id)
            if len(self.read) >= self._banks:
                self.done.set()


def bridge_config(port: str) -> BridgeConfig:
    """Poll without pauses: no bus budget, bank reads always due, status read once."""
    return BridgeConfig(
        port=port,
        boards=tuple(
            BoardSpec(address=address, slot_count=SLOTS_PER_BOARD)
            for address in range(1, BOARDS + 1)
        ),
        bus_budget=1.0,
        bank_interval_s=0.001,
        status_interval_s=3600.0,
        event_poll_interval_s=0.9,
    )


def sim_config(seed: int, turnaround_s: float = TURNAROUND_S) -> SimConfig:
    return SimConfig(
        boards=BOARDS,
        slots_per_board=SLOTS_PER_BOARD,
        seed=seed,
        banks=BankMix(fill_ratio=1.0),
        pacing=True,
        baud_rate=BAUD_RATE,
        turnaround_s=turnaround_s,
    )


async def scan_once(port: str) -> tuple[float, BusStats]:
    """Return the seconds from bridge start to the last bank read, and the bus statistics."""
    sink = ScanSink(BOARDS * SLOTS_PER_BOARD)
    bridge = Bridge(bridge_config(port), sink, MemoryStore())
    started = time.perf_counter()
    task = asyncio.create_task(bridge.run(), name="bench-scan-bridge")
    try:
        async with asyncio.timeout(SCAN_TIMEOUT_S):
            await bridge.wait_ready(SCAN_TIMEOUT_S)
            await sink.done.wait()
        elapsed = time.perf_counter() - started
        stats = bridge.stats()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return elapsed, stats


async def scan_in_process(seed: int) -> tuple[float, BusStats]:
    """Scan with the simulator on the bridge's own event loop, for comparison."""
    cabinet = Cabinet(sim_config(seed), clock=MonotonicClock())
    async with PtyTransport(cabinet) as pty:
        return await scan_once(pty.device_path)


def scan_child_process(
    seed: int, workdir: Path, turnaround_s: float = TURNAROUND_S
) -> tuple[float, BusStats]:
    link = workdir / f"ttyCAB{seed}"
    with simulator_process(sim_config(seed, turnaround_s), link, SIM_LIFETIME_S):
        return asyncio.run(scan_once(str(link)))


def wire_seconds(stats: BusStats) -> float:
    return wire_time_s(stats.bytes_sent + stats.bytes_received, BAUD_RATE)


def run(quick: bool) -> tuple[BenchResult, list[str]]:
    runs = QUICK_RUNS if quick else FULL_RUNS
    summary = [f"scan: {BOARDS} boards x {SLOTS_PER_BOARD} slots at {BAUD_RATE} baud, {runs} runs"]
    ratios: list[tuple[float, float, float]] = []

    with tempfile.TemporaryDirectory(prefix="bench-scan-") as workdir:
        measured = [scan_child_process(seed, Path(workdir)) for seed in range(runs)]
        default_elapsed, default_stats = scan_child_process(
            runs, Path(workdir), DEFAULT_TURNAROUND_S
        )

    for seed, (elapsed, stats) in enumerate(measured):
        wire = wire_seconds(stats)
        ratios.append((elapsed / wire, elapsed, wire))
        summary.append(
            f"  run {seed}: {elapsed * 1000:.1f} ms elapsed, wire {wire * 1000:.1f} ms "
            f"({stats.frames_sent} requests, {stats.frames_received} replies, "
            f"{stats.bytes_sent} + {stats.bytes_received} bytes, {stats.timeouts} timeouts, "
            f"{stats.retries} retries), ratio {elapsed / wire:.3f}"
        )

    # Every run exchanges the same frames, so the last run's counts stand for all.
    floor = wire + stats.frames_sent * (
        TURNAROUND_S + INTER_FRAME_BYTES * BITS_PER_BYTE / BAUD_RATE
    )
    summary.append(
        f"  floor with a {TURNAROUND_S * 1000:.1f} ms turnaround and the "
        f"{INTER_FRAME_BYTES} byte-time gap per exchange: {floor * 1000:.1f} ms, "
        f"ratio {floor / wire:.3f}"
    )

    median_ratio = statistics.median(ratio for ratio, _, _ in ratios)
    _, elapsed, wire = min(ratios, key=lambda item: abs(item[0] - median_ratio))
    result = BenchResult(
        name="scan",
        value=elapsed * 1000,
        unit="ms",
        baseline=wire * 1000,
        ratio=safe_ratio(elapsed, wire),
        target=f"ratio <= {TARGET_RATIO}",
        met=safe_ratio(elapsed, wire) <= TARGET_RATIO,
    )
    summary.append("  reported: the run with the median ratio")

    default_wire = wire_seconds(default_stats)
    default_floor = default_wire + default_stats.frames_sent * (
        DEFAULT_TURNAROUND_S + INTER_FRAME_BYTES * BITS_PER_BYTE / BAUD_RATE
    )
    summary.append(
        f"  for comparison, boards with the simulator's default "
        f"{DEFAULT_TURNAROUND_S * 1000:.1f} ms turnaround: {default_elapsed * 1000:.1f} ms, "
        f"ratio {default_elapsed / default_wire:.3f} (floor {default_floor / default_wire:.3f})"
    )
    elapsed, stats = asyncio.run(scan_in_process(runs))
    summary.append(
        f"  for comparison, simulator on the bridge's event loop: {elapsed * 1000:.1f} ms, "
        f"ratio {elapsed / wire_seconds(stats):.3f}"
    )
    return result, summary
