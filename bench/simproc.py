"""The cabinet simulator in its own process, serving a pseudo-terminal at a fixed path.

Real slot boards compute on their own hardware. Running the simulator in a child process
keeps its physics and pacing work off the event loop being measured, and off its core when
the machine has two.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path

from cabinet_sim import Cabinet, MonotonicClock, SimConfig
from cabinet_sim.transports import PtyTransport

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def _serve(
    config: SimConfig,
    link_path: str,
    lifetime_s: float,
    ready: multiprocessing.connection.Connection,
) -> None:
    async def serve() -> None:
        cabinet = Cabinet(config, clock=MonotonicClock())
        async with PtyTransport(cabinet, link_path=Path(link_path)):
            ready.send(os.getpid())
            await asyncio.sleep(lifetime_s)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@contextlib.contextmanager
def simulator_process(
    config: SimConfig, link_path: Path, lifetime_s: float
) -> Iterator[BaseProcess]:
    """Serve `config` on `link_path` in a child process for the block, at most `lifetime_s`."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_serve, args=(config, str(link_path), lifetime_s, sender), daemon=True
    )
    process.start()
    try:
        if not receiver.poll(START_TIMEOUT_S):
            raise TimeoutError(f"simulator did not open {link_path} in {START_TIMEOUT_S} s")
        receiver.recv()
        yield process
    finally:
        process.terminate()
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(STOP_TIMEOUT_S)
        receiver.close()
        sender.close()
