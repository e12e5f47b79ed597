"""The in-process end-to-end rig with the simulator behind a stable symlink to its pty.

Like `tests.gateway.rig.running_rig`, but the daemon opens a symlink that the simulator moves
to each new pseudo-terminal, so the port can vanish and come back as a new device, as after a
USB unplug. Options of the daemon can be overridden per section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console

from cabinet_sim import SimConfig
from cabinet_sim.runtime import RunOptions, Simulation
from gateway.cloudtool import BrokerAddress, ScriptedCloud
from tests.gateway.rig import CABINET, KEY_ID, WAIT_S, Inbox, Rig
from tests.support.mosquitto import MosquittoBroker


@contextlib.asynccontextmanager
async def fault_rig(
    broker: MosquittoBroker,
    tmp_path: Path,
    *,
    overrides: dict[str, Any] | None = None,
    sim_config: SimConfig | None = None,
) -> AsyncIterator[Rig]:
    link_path = tmp_path / "ttyCABINET"
    sim = Simulation(
        RunOptions(
            config=sim_config or SimConfig(boards=2, slots_per_board=4, seed=7),
            pty=True,
            link_path=link_path,
            view=False,
            stdin=False,
        ),
        Console(quiet=True),
    )
    key = Ed25519PrivateKey.generate()
    inbox = Inbox()
    cloud = ScriptedCloud(
        BrokerAddress("127.0.0.1", broker.port, tls=False),
        cabinet_id=CABINET,
        key=key,
        key_id=KEY_ID,
        mqtt_version="5",
        on_message=inbox.receive,
    )
    async with asyncio.TaskGroup() as tasks:
        endpoints: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        sim_task = tasks.create_task(sim.run(endpoints.set_result))
        await asyncio.wait_for(endpoints, WAIT_S)
        rig = Rig(
            sim, broker, tmp_path / "state", str(link_path), key, inbox, cloud, overrides or {}
        )
        try:
            async with cloud.connected():
                try:
                    await rig.start_daemon()
                    yield rig
                finally:
                    await rig.stop_daemon()
        finally:
            sim.stop()
            await sim_task


CHECK_INTERVAL_S = 0.02


async def wait_daemon(rig: Rig, predicate: Callable[[], bool], within_s: float = WAIT_S) -> None:
    """Wait until `predicate()` holds, checked after every feed event and every 20 ms.

    The periodic check is needed because counters such as `bridge.stats().reopens` change
    without a feed event; the wait still ends as soon as the condition holds.
    """
    assert rig.daemon is not None
    feed = rig.daemon.feed
    async with asyncio.timeout(within_s):
        while not predicate():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.wait_for(predicate), CHECK_INTERVAL_S)


async def poll_until(predicate: Callable[[], bool], within_s: float = WAIT_S) -> None:
    """Wait until `predicate()` holds, checked every 20 ms, for state with no change event."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110  (the state has no event to wait on)
            await asyncio.sleep(CHECK_INTERVAL_S)


async def rentable_slot(rig: Rig) -> int:
    """Return the first slot the daemon considers rentable, waiting for one if needed."""
    assert rig.daemon is not None
    bridge = rig.daemon.bridge

    def rentable() -> list[int]:
        return [slot.slot for slot in bridge.snapshot().slots if slot.rentable]

    await wait_daemon(rig, lambda: bool(rentable()))
    return rentable()[0]
