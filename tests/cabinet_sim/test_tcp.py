"""TCP transport: pyserial's socket:// URL against the simulator, and port loss."""

from __future__ import annotations

import asyncio

import serial

from cabinet_sim import Cabinet, MonotonicClock
from cabinet_sim.transports.tcp import TcpTransport
from protocol.slotbus import Command, Deframer, Empty, encode_request
from tests.cabinet_sim.conftest import empty_config

IDENTIFY = encode_request(2, 17, Command.IDENTIFY, Empty())


def _exchange(url: str) -> bytes:
    port = serial.serial_for_url(url, timeout=2.0)
    try:
        port.write(IDENTIFY)
        deframer = Deframer()
        received = b""
        while not deframer.stats.frames:
            data = port.read(1)
            assert data, "no response within the timeout"
            received += data
            deframer.feed(data)
        return received
    finally:
        port.close()


async def test_pyserial_socket_url() -> None:
    cabinet = Cabinet(empty_config(), clock=MonotonicClock())
    async with TcpTransport(cabinet) as tcp:
        assert tcp.url.startswith("socket://127.0.0.1:")
        received = await asyncio.to_thread(_exchange, tcp.url)
    frames = Deframer().feed(received)
    assert [(frame.address, frame.sequence) for frame in frames] == [(2, 17)]


async def test_port_loss_drops_connection() -> None:
    cabinet = Cabinet(empty_config(), clock=MonotonicClock())
    async with TcpTransport(cabinet, pacing=False) as tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)
        writer.write(IDENTIFY)
        assert await asyncio.wait_for(reader.read(4096), 2.0)
        cabinet.port_down()
        assert await asyncio.wait_for(reader.read(4096), 2.0) == b""
        writer.close()
        assert not tcp.serving.is_set()
        cabinet.port_up()
        # The server comes back on the same port.
        await asyncio.wait_for(tcp.serving.wait(), 2.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)
        writer.write(IDENTIFY)
        assert Deframer().feed(await asyncio.wait_for(reader.read(4096), 2.0))
        writer.close()
