"""TCP transport on 127.0.0.1, for pyserial's `socket://127.0.0.1:PORT` URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.transports.line import CabinetLine, Shaping, keep_up

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
READ_SIZE = 4096


class TcpTransport:
    """Serves `cabinet` on a TCP port. Use as `async with TcpTransport(c, port) as tcp`.

    Port 0 picks a free port (see `port`). Each connection is one master on the bus; a second
    connection at the same time shares the bus, as two masters would. While the cabinet's port
    is down the server is closed and every connection is dropped.
    """

    def __init__(
        self,
        cabinet: Cabinet,
        port: int = 0,
        *,
        baud_rate: int | None = None,
        pacing: bool | None = None,
        shaping: Shaping | None = None,
    ) -> None:
        self.cabinet = cabinet
        self.port = port
        self._baud_rate = baud_rate
        self._pacing = pacing
        self._shaping = shaping
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stopped: set[asyncio.Task[None]] = set()
        self._restart: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._unsubscribe = cabinet.subscribe(self._on_notice)
        self.serving = asyncio.Event()
        """Set while the server accepts connections."""

    @property
    def url(self) -> str:
        return f"socket://{HOST}:{self.port}"

    async def __aenter__(self) -> Self:
        await self._start()
        self._ticker = asyncio.get_running_loop().create_task(
            keep_up(self.cabinet), name="tcp-clock"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._unsubscribe()
        self._stop()
        pending = set(self._stopped)
        for task in (self._restart, self._ticker):
            if task is not None:
                pending.add(task)
                task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.serving.set()
        logger.info("serial port on %s", self.url)

    def _stop(self) -> None:
        self.serving.clear()
        if self._server is not None:
            self._server.close()
        for task in self._connections:
            task.cancel()
            self._stopped.add(task)
        self._connections.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        logger.info("master connected from %s", peer)
        line = CabinetLine(
            self.cabinet, baud_rate=self._baud_rate, pacing=self._pacing, shaping=self._shaping
        )

        async def read() -> bytes:
            try:
                return await reader.read(READ_SIZE)
            except ConnectionError:
                return b""

        async def write(data: bytes) -> None:
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

        try:
            await line.serve(read, write)
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)
            logger.info("master %s disconnected", peer)

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.PORT_DOWN:
            self._stop()
        elif notice.kind is NoticeKind.PORT_UP and self._restart is None:
            self._restart = asyncio.get_running_loop().create_task(
                self._reopen(), name="tcp-reopen"
            )

    async def _reopen(self) -> None:
        try:
            if self._server is not None:
                await self._server.wait_closed()
            await self._start()
        finally:
            self._restart = None
