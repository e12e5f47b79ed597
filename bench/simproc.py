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
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from cabinet_sim import Cabinet, MonotonicClock, SimConfig
from cabinet_sim.transports import PtyTransport

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

Control = multiprocessing.connection.Connection
"""One end of the duplex pipe between the benchmark and a controlled simulator process."""

ControlHandler = Callable[[Any], Any]
"""Runs one request from the benchmark in the simulator process and returns the reply."""


def _serve(
    config: SimConfig,
    link_path: str,
    lifetime_s: float,
    ready: Control,
) -> None:
    async def serve() -> None:
        cabinet = Cabinet(config, clock=MonotonicClock())
        async with PtyTransport(cabinet, link_path=Path(link_path)):
            ready.send(os.getpid())
            await asyncio.sleep(lifetime_s)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def serve_controlled(
    cabinet: Cabinet, link_path: str, lifetime_s: float, control: Control, handle: ControlHandler
) -> None:
    """Serve `cabinet` on `link_path` and reply to each request read from `control` with
    `handle`, until the benchmark closes its end or `lifetime_s` passes.

    Call it in the child process. It sends `("ready", pid)` once the link is open, then
    `("reply", value)` or `("error", text)` for each request.
    """

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()

        def on_request() -> None:
            while control.poll():
                try:
                    request = control.recv()
                except EOFError:
                    loop.remove_reader(control.fileno())
                    closed.set()
                    return
                try:
                    reply = ("reply", handle(request))
                except Exception as exc:  # reported to the benchmark, which stops
                    reply = ("error", f"{request!r} failed: {exc!r}")
                control.send(reply)

        async with PtyTransport(cabinet, link_path=Path(link_path)):
            loop.add_reader(control.fileno(), on_request)
            control.send(("ready", os.getpid()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lifetime_s):
                    await closed.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@contextlib.contextmanager
def child_process(target: Callable[..., None], args: tuple[Any, ...]) -> Iterator[Control]:
    """Run `target(*args, control)` in a spawned process for the block; yield the benchmark's
    end of the duplex pipe `control` after the child sent its first message."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)
    process: BaseProcess = context.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(START_TIMEOUT_S):
            raise TimeoutError(f"simulator process did not start in {START_TIMEOUT_S} s")
        ours.recv()
        yield ours
    finally:
        process.terminate()
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(STOP_TIMEOUT_S)
        ours.close()
        theirs.close()


@contextlib.contextmanager
def simulator_process(config: SimConfig, link_path: Path, lifetime_s: float) -> Iterator[None]:
    """Serve `config` on `link_path` in a child process for the block, at most `lifetime_s`."""
    with child_process(_serve, (config, str(link_path), lifetime_s)):
        yield
