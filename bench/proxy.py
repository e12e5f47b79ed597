"""A counting TCP proxy on 127.0.0.1 that can also time MQTT packets on their way through.

Bytes are counted per direction as they are read from either socket, so the totals are the
TCP payload of the connection (no IP or TCP headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from bench.broker import HOST

READ_SIZE = 65536
MQTT_PUBLISH = 3

PacketTap = Callable[[int, float], None]
"""Receives the MQTT packet type and the time.monotonic() at which its last byte arrived."""


class MqttSplitter:
    """Find MQTT control packet boundaries in a byte stream (fixed header, length varint)."""

    def __init__(self, tap: PacketTap) -> None:
        self._tap = tap
        self._buffer = bytearray()

    def feed(self, data: bytes, at: float) -> None:
        self._buffer += data
        while True:
            size = self._packet_size()
            if size is None or len(self._buffer) < size:
                return
            packet_type = self._buffer[0] >> 4
            del self._buffer[:size]
            self._tap(packet_type, at)

    def _packet_size(self) -> int | None:
        remaining = 0
        for index in range(1, min(len(self._buffer), 5)):
            byte = self._buffer[index]
            remaining |= (byte & 0x7F) << (7 * (index - 1))
            if not byte & 0x80:
                return 1 + index + remaining
        return None


@dataclass
class ByteCounts:
    to_broker: int = 0
    from_broker: int = 0
    connections: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        return self.to_broker + self.from_broker


class CountingProxy:
    """Forward every connection to the broker, count its bytes and pass broker packets to a tap."""

    def __init__(self, broker_port: int, tap: PacketTap | None = None) -> None:
        self._broker_port = broker_port
        self._tap = tap
        self.counts = ByteCounts()
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[CountingProxy]:
        server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            for task in list(self._handlers):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self.counts.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                HOST, self._broker_port
            )
        except OSError:
            writer.close()
            return
        splitter = MqttSplitter(self._tap) if self._tap is not None else None
        try:
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(self._pipe(reader, upstream_writer, None, upward=True))
                pipes.create_task(self._pipe(upstream_reader, writer, splitter, upward=False))
        except* (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            upstream_writer.close()
            if task is not None:
                self._handlers.discard(task)
            self.counts.closed.set()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        splitter: MqttSplitter | None,
        *,
        upward: bool,
    ) -> None:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                writer.close()
                return
            at = time.monotonic()
            if upward:
                self.counts.to_broker += len(data)
            else:
                self.counts.from_broker += len(data)
            if splitter is not None:
                splitter.feed(data, at)
            writer.write(data)
            await writer.drain()
