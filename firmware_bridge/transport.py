"""Byte links to the bus: a serial device or pty through pyserial, or a TCP socket.

The serial link reads with `loop.add_reader` on the pyserial file descriptor: no thread and no
polling, so an idle bus costs no CPU. pyserial opens the device non-blocking, takes an
exclusive flock (`exclusive=True`) and ignores EINVAL/ENOTTY from the modem-control ioctls
that pseudo-terminals reject (pyserial 3.5, serialposix.py). `socket://HOST:PORT` URLs are
served by asyncio streams. Other pyserial URL schemes are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Protocol

import serial

from firmware_bridge.errors import PortBusyError, PortError, PortLostError

logger = logging.getLogger(__name__)

READ_CHUNK = 4096


class ByteLink(Protocol):
    """An open byte stream to the bus."""

    @property
    def description(self) -> str: ...

    async def read(self) -> bytes:
        """Return at least one received byte; raise PortLostError when the port is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Write all of `data`; raise PortLostError when the port is gone."""
        ...

    def close(self) -> None:
        """Release every resource; safe to call more than once."""
        ...


PortOpener = Callable[[], Awaitable[ByteLink]]


class SerialLink:
    """A pyserial port read through the event loop's selector."""

    def __init__(self, port: serial.Serial, url: str, check_interval_s: float) -> None:
        self._port = port
        self._url = url
        self._fd: int = port.fileno()
        self._check_interval_s = check_interval_s
        self._loop = asyncio.get_running_loop()
        self._received = bytearray()
        self._readable = asyncio.Event()
        self._error: PortLostError | None = None
        self._closed = False
        self._loop.add_reader(self._fd, self._on_readable)
        self._check_timer: asyncio.TimerHandle | None = None
        if url.startswith("/"):
            self._schedule_check()

    @property
    def description(self) -> str:
        return self._url

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(PortLostError(f"read from {self._url} failed: {exc}"))
            return
        if not data:
            self._fail(PortLostError(f"{self._url} reported end of file"))
            return
        self._received += data
        self._readable.set()

    def _fail(self, error: PortLostError) -> None:
        if self._error is None:
            self._error = error
        self._loop.remove_reader(self._fd)
        self._readable.set()

    async def read(self) -> bytes:
        while not self._received:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise PortLostError(f"{self._url} is closed")
            await self._readable.wait()
            self._readable.clear()
        data = bytes(self._received)
        self._received.clear()
        return data

    def _check_device(self) -> None:
        """Notice a device node that vanished without a read error (some USB adapters).

        Runs on a timer every `check_interval_s` while the link is open, so that a read
        needs no timeout of its own.
        """
        self._check_timer = None
        if self._closed or self._error is not None:
            return
        if not os.path.exists(self._url):
            self._fail(PortLostError(f"{self._url} no longer exists"))
            return
        self._schedule_check()

    def _schedule_check(self) -> None:
        # On multiples of the interval, like the poller's idle ticks (the loop's clock is
        # time.monotonic), so an idle gateway wakes up once for both.
        interval = self._check_interval_s
        when = (math.floor(self._loop.time() / interval) + 1) * interval
        self._check_timer = self._loop.call_at(when, self._check_device)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise PortLostError(f"{self._url} is closed")
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await self._writable()
                continue
            except OSError as exc:
                self._fail(PortLostError(f"write to {self._url} failed: {exc}"))
                raise self._error from exc  # type: ignore[misc]
            view = view[written:]

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._check_timer is not None:
            self._check_timer.cancel()
            self._check_timer = None
        self._loop.remove_reader(self._fd)
        self._readable.set()
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()


class SocketLink:
    """A TCP connection, for `socket://` URLs (a simulator or a serial-to-network converter)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str):
        self._reader = reader
        self._writer = writer
        self._url = url

    @property
    def description(self) -> str:
        return self._url

    async def read(self) -> bytes:
        try:
            data = await self._reader.read(READ_CHUNK)
        except OSError as exc:
            raise PortLostError(f"read from {self._url} failed: {exc}") from exc
        if not data:
            raise PortLostError(f"{self._url} closed the connection")
        return data

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise PortLostError(f"{self._url} is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise PortLostError(f"write to {self._url} failed: {exc}") from exc

    def close(self) -> None:
        self._writer.close()


def _open_serial(url: str, baudrate: int, stopbits: int) -> serial.Serial:
    try:
        return serial.serial_for_url(
            url, baudrate=baudrate, stopbits=stopbits, exclusive=True, timeout=0
        )
    except serial.SerialException as exc:
        code = exc.errno if isinstance(exc.errno, int) else None
        if code in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise PortBusyError(
                f"serial port {url} is in use by another process (exclusive lock held); "
                "stop the other program or choose another port"
            ) from exc
        raise PortError(f"cannot open serial port {url}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise PortError(f"cannot open serial port {url}: {exc}") from exc


async def open_link(url: str, *, baudrate: int, stopbits: int, check_interval_s: float) -> ByteLink:
    """Open `url` exclusively; raise PortBusyError or PortError with the cause."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "socket":
        if parsed.hostname is None or parsed.port is None:
            raise PortError(f"socket URL {url} needs a host and a port")
        try:
            reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        except OSError as exc:
            raise PortError(f"cannot connect to {url}: {exc}") from exc
        return SocketLink(reader, writer, url)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise PortError(f"unsupported port URL scheme {parsed.scheme!r} in {url}")
    port = await asyncio.to_thread(_open_serial, url, baudrate, stopbits)
    try:
        return SerialLink(port, url, check_interval_s)
    except BaseException:
        port.close()
        raise
