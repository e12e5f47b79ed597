"""Pseudo-terminal transport: the gateway opens the slave device as if it were a USB adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from pathlib import Path
from types import TracebackType
from typing import Self

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.transports.line import CabinetLine, Shaping, keep_up

logger = logging.getLogger(__name__)

READ_SIZE = 4096


class PtyTransport:
    """Serves `cabinet` on a pseudo-terminal. Use as `async with PtyTransport(c) as pty`.

    `device_path` is what the master opens. With `link_path` it is a symlink to the current
    slave device, so the name survives the port going down and coming back (the slave device
    itself is new each time, as after a USB unplug).
    """

    def __init__(
        self,
        cabinet: Cabinet,
        *,
        link_path: Path | None = None,
        baud_rate: int | None = None,
        pacing: bool | None = None,
        shaping: Shaping | None = None,
    ) -> None:
        self.cabinet = cabinet
        self.link_path = link_path
        self._line = CabinetLine(cabinet, baud_rate=baud_rate, pacing=pacing, shaping=shaping)
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self.slave_path: str | None = None
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._unsubscribe = cabinet.subscribe(self._on_notice)

    @property
    def device_path(self) -> str:
        if self.link_path is not None:
            return str(self.link_path)
        if self.slave_path is None:
            raise RuntimeError("the pseudo-terminal is not open")
        return self.slave_path

    async def __aenter__(self) -> Self:
        self._open_pty()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._line.serve(self._read, self._write), name="pty-line")
        self._ticker = loop.create_task(keep_up(self.cabinet), name="pty-clock")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._unsubscribe()
        for task in (self._task, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._close_pty()

    def _open_pty(self) -> None:
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        os.set_blocking(master_fd, False)
        self._master_fd, self._slave_fd = master_fd, slave_fd
        self.slave_path = os.ttyname(slave_fd)
        asyncio.get_running_loop().add_reader(master_fd, self._on_readable)
        if self.link_path is not None:
            temporary = self.link_path.with_name(self.link_path.name + ".new")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self.slave_path)
            temporary.replace(self.link_path)
        logger.info("serial port on %s (slave %s)", self.device_path, self.slave_path)

    def _close_pty(self) -> None:
        if self._master_fd is not None:
            asyncio.get_running_loop().remove_reader(self._master_fd)
            os.close(self._master_fd)
        if self._slave_fd is not None:
            os.close(self._slave_fd)
        self._master_fd = self._slave_fd = None
        if self.link_path is not None:
            self.link_path.unlink(missing_ok=True)

    def _on_readable(self) -> None:
        if self._master_fd is None:
            return
        try:
            data = os.read(self._master_fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.warning("reading the pseudo-terminal failed: %s", exc)
            return
        if data:
            self._incoming.put_nowait(data)

    async def _read(self) -> bytes:
        return await self._incoming.get()

    async def _write(self, data: bytes) -> None:
        if self._master_fd is None:
            return
        try:
            os.write(self._master_fd, data)
        except BlockingIOError:
            # The port's buffer is full because no process reads it. A UART without flow
            # control loses the bytes too.
            logger.debug("pseudo-terminal buffer full, %d bytes lost", len(data))
        except OSError as exc:
            logger.warning("writing the pseudo-terminal failed: %s", exc)

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.PORT_DOWN and self._master_fd is not None:
            self._close_pty()
            logger.info("serial port removed")
        elif notice.kind is NoticeKind.PORT_UP and self._master_fd is None:
            self._open_pty()
