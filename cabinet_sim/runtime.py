"""Runs a simulated cabinet live: clock, transports, users, scenario, control channel and view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.clock import MonotonicClock
from cabinet_sim.config import SimConfig
from cabinet_sim.control import ControlError, Controller
from cabinet_sim.scenario import Scenario
from cabinet_sim.transports.pty import PtyTransport
from cabinet_sim.transports.tcp import TcpTransport
from cabinet_sim.users import UserBehaviour, Users
from cabinet_sim.view import CabinetView

logger = logging.getLogger(__name__)

TICK_S = 0.05
"""Real seconds between catch-ups of the simulation with its clock."""
VIEW_REFRESH_S = 0.25
QUIT_COMMANDS = frozenset({"quit", "exit"})


@dataclass(frozen=True, slots=True)
class RunOptions:
    config: SimConfig
    scenario: Scenario | None = None
    users: UserBehaviour | None = None
    pty: bool = True
    link_path: Path | None = None
    tcp_port: int | None = None
    speed: float = 1.0
    view: bool = True
    stdin: bool = True
    control_socket: Path | None = None
    duration_s: float | None = None


class Simulation:
    """One live run. `run()` returns when a quit command arrives or the duration has passed."""

    def __init__(self, options: RunOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console if console is not None else Console()
        self.cabinet = Cabinet(options.config, clock=MonotonicClock(options.speed))
        self.controller = Controller(self.cabinet)
        self.view = CabinetView(
            self.cabinet, title=options.scenario.name if options.scenario else ""
        )
        self.users: Users | None = None
        self.endpoints: list[str] = []
        self._stop = asyncio.Event()
        self.control_ready = asyncio.Event()
        """Set once the control socket accepts connections."""

    def stop(self) -> None:
        self._stop.set()

    async def run(self, ready: Callable[[list[str]], None] | None = None) -> None:
        """Serve until stopped; `ready` receives the endpoints once the ports are open."""
        options = self.options
        async with contextlib.AsyncExitStack() as stack:
            if options.pty:
                pty = await stack.enter_async_context(
                    PtyTransport(self.cabinet, link_path=options.link_path)
                )
                self.endpoints.append(pty.device_path)
            if options.tcp_port is not None:
                tcp = await stack.enter_async_context(TcpTransport(self.cabinet, options.tcp_port))
                self.endpoints.append(tcp.url)
            self.view.device = " ".join(self.endpoints)
            self._start_people()
            if ready is not None:
                ready(self.endpoints)
            await self._run_tasks()
        if self.users is not None:
            logger.info("users: %s", self.users.stats)

    def _start_people(self) -> None:
        scenario = self.options.scenario
        behaviour = self.options.users or (scenario.users if scenario else None)
        if behaviour is not None:
            self.users = Users(self.cabinet, behaviour)
        if scenario is not None:
            scenario.start(self.cabinet, self.controller)

    async def _run_tasks(self) -> None:
        options = self.options
        jobs: list[Coroutine[Any, Any, None]] = [self._tick()]
        if options.control_socket is not None:
            jobs.append(self._serve_control_socket(options.control_socket))
        if options.stdin:
            jobs.append(self._read_stdin())
        if options.view:
            jobs.append(self._show_view())
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job) for job in jobs]
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    async def _tick(self) -> None:
        duration = self.options.duration_s
        if duration is None and self.options.scenario is not None:
            duration = self.options.scenario.duration
        while True:
            self.cabinet.update()
            if duration is not None and self.cabinet.now >= duration:
                logger.info("simulation reached its duration of %.0f s", duration)
                self.stop()
                return
            await asyncio.sleep(TICK_S)

    def execute(self, line: str) -> str:
        """Run one control line and return the reply text ("error: ..." when it failed)."""
        if line.strip().lower() in QUIT_COMMANDS:
            self.stop()
            return "stopping"
        try:
            return self.controller.execute(line)
        except ControlError as exc:
            return f"error: {exc}"

    def _reply(self, reply: str) -> None:
        if not reply:
            return
        if self.options.view:
            for line in reply.splitlines():
                self.view.log.append(f"> {line}")
        else:
            self.console.print(reply, markup=False, highlight=False)

    async def _read_stdin(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        except (OSError, ValueError) as exc:
            logger.warning("cannot read control commands from stdin: %s", exc)
            return
        while line := await reader.readline():
            self._reply(self.execute(line.decode(errors="replace")))

    async def _serve_control_socket(self, path: Path) -> None:
        _remove_socket_file(path)
        server = await asyncio.start_unix_server(self._control_client, path=str(path))
        logger.info("control socket on %s", path)
        self.control_ready.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            _remove_socket_file(path)

    async def _control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Run each received line; every reply ends with an empty line."""
        try:
            while line := await reader.readline():
                reply = self.execute(line.decode(errors="replace"))
                writer.write(reply.encode() + b"\n\n")
                await writer.drain()
        except ConnectionError as exc:
            logger.debug("control client left: %s", exc)
        finally:
            writer.close()

    async def _show_view(self) -> None:
        with Live(self.view.render(), console=self.console, auto_refresh=False) as live:
            while True:
                live.update(self.view.render(), refresh=True)
                await asyncio.sleep(VIEW_REFRESH_S)


def _remove_socket_file(path: Path) -> None:
    path.unlink(missing_ok=True)
