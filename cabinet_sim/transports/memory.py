"""In-process serial line for unit tests: a connected socket pair, cabinet on one end.

The master end is an ordinary non-blocking socket, so a test can use asyncio streams
(`open_master_streams`) or a protocol (`loop.create_connection(factory, sock=...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import TracebackType
from typing import Self

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.transports.line import CabinetLine, Shaping, keep_up

logger = logging.getLogger(__name__)

READ_SIZE = 4096


class MemoryLink:
    """A serial line to `cabinet` inside the process. Use as `async with MemoryLink(c) as link`.

    Pacing is off unless requested, so unit tests run at full speed. When the cabinet's port
    goes down, the cabinet end closes and the master reads end of stream. When the port comes
    back, a new pair replaces `master_socket`, so the master must reopen, as after a USB unplug.
    """

    def __init__(
        self, cabinet: Cabinet, *, pacing: bool = False, shaping: Shaping | None = None
    ) -> None:
        self.cabinet = cabinet
        self.pacing = pacing
        self.shaping = shaping
        self.master_socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopped: set[asyncio.Task[None]] = set()  # cancelled at port down, awaited on exit
        self._unsubscribe = cabinet.subscribe(self._on_notice)
        self.reopened = asyncio.Event()
        """Set each time the line comes back after the port was down."""

    async def __aenter__(self) -> Self:
        self._open()
        self._ticker = asyncio.get_running_loop().create_task(
            keep_up(self.cabinet), name="memory-clock"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._unsubscribe()
        await self._close()

    async def open_master_streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Return asyncio streams on the master end of the current pair."""
        if self.master_socket is None:
            raise ConnectionError("the simulated serial port is down")
        return await asyncio.open_connection(sock=self.master_socket)

    def _open(self) -> None:
        master, cabinet_end = socket.socketpair()
        master.setblocking(False)
        cabinet_end.setblocking(False)
        self.master_socket = master
        line = CabinetLine(self.cabinet, pacing=self.pacing, shaping=self.shaping)
        self._task = asyncio.get_running_loop().create_task(
            self._serve(line, cabinet_end), name="memory-link"
        )

    async def _serve(self, line: CabinetLine, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()

        async def read() -> bytes:
            try:
                return await loop.sock_recv(sock, READ_SIZE)
            except OSError:
                return b""

        async def write(data: bytes) -> None:
            with contextlib.suppress(OSError):
                await loop.sock_sendall(sock, data)

        try:
            await line.serve(read, write)
        finally:
            _discard_unread(sock)
            sock.close()

    async def _close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._stopped.add(self._ticker)
            self._ticker = None
        if self._task is not None:
            self._task.cancel()
            self._stopped.add(self._task)
            self._task = None
        for task in self._stopped:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopped.clear()
        self.master_socket = None

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.PORT_DOWN:
            if self._task is not None:
                self._task.cancel()
                self._stopped.add(self._task)
                self._task = None
            self.master_socket = None
            self.reopened.clear()
        elif notice.kind is NoticeKind.PORT_UP and self._task is None:
            self._open()
            self.reopened.set()


def _discard_unread(sock: socket.socket) -> None:
    """Read what is left, so that closing ends the master's stream instead of resetting it."""
    with contextlib.suppress(OSError):
        while sock.recv(READ_SIZE):
            pass
