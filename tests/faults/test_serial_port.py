"""The serial port vanishing and coming back many times, as a loose USB adapter does."""

from __future__ import annotations

import asyncio
import os
import time
from functools import partial
from pathlib import Path

import pytest

from tests.faults.harness import fault_rig, wait_daemon
from tests.gateway.rig import Rig
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

OUTAGE_S = 1.0
# A reopen loop without backoff, or a read loop on a dead descriptor, burns a whole core:
# about OUTAGE_S of CPU. The whole test process (simulator, cloud, daemon) stays far below.
MAX_CPU_SHARE_WHILE_GONE = 0.35
FD_SLACK = 2


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reopened(rig: Rig, expected: int) -> bool:
    assert rig.daemon is not None
    return rig.daemon.bridge.stats().reopens >= expected and boards_online(rig)


def boards_online(rig: Rig) -> bool:
    assert rig.daemon is not None
    snapshot = rig.daemon.bridge.snapshot()
    return all(board.link.value == "online" for board in snapshot.boards)


async def unplug_replug(rig: Rig, cycles: int) -> tuple[int, int, list[float]]:
    """Pull and restore the port `cycles` times; return fds before and after, CPU per outage."""
    assert rig.daemon is not None
    daemon = rig.daemon
    cabinet = rig.sim.cabinet
    await wait_daemon(rig, lambda: boards_online(rig))

    # One cycle first, so that lazily created objects do not count as a leak.
    cabinet.port_down()
    cabinet.port_up()
    await wait_daemon(rig, lambda: daemon.bridge.stats().reopens >= 1 and boards_online(rig))
    fds_before = open_fds()
    reopens_before = daemon.bridge.stats().reopens

    cpu_shares: list[float] = []
    for cycle in range(1, cycles + 1):
        cabinet.port_down()
        await wait_daemon(rig, lambda: not daemon.bridge.stats().port_open)
        cpu_start, wall_start = time.process_time(), time.monotonic()
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for an event
        cpu_shares.append((time.process_time() - cpu_start) / (time.monotonic() - wall_start))
        cabinet.port_up()
        await wait_daemon(rig, partial(reopened, rig, reopens_before + cycle))
    assert daemon.bridge.stats().reopens == reopens_before + cycles
    return fds_before, open_fds(), cpu_shares


@pytest.mark.parametrize("cycles", [12])
async def test_port_reopened_every_time(
    mosquitto: MosquittoBroker, tmp_path: Path, cycles: int
) -> None:
    """Invariant: after each of many unplugs the daemon reopens the port and serves the boards,
    its open file descriptors stay flat, and it uses little CPU while the port is gone."""
    async with fault_rig(
        mosquitto, tmp_path, overrides={"serial": {"status_interval_s": 1.0}}
    ) as rig:
        fds_before, fds_after, cpu_shares = await unplug_replug(rig, cycles)

    assert fds_after <= fds_before + FD_SLACK
    assert max(cpu_shares) < MAX_CPU_SHARE_WHILE_GONE


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_port_reopened_soak(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: as above, over 200 unplugs."""
    async with fault_rig(mosquitto, tmp_path) as rig:
        fds_before, fds_after, cpu_shares = await unplug_replug(rig, 200)

    assert fds_after <= fds_before + FD_SLACK
    assert max(cpu_shares) < MAX_CPU_SHARE_WHILE_GONE
