"""The simulator's transports: in-memory socket pair, pseudo-terminal with pyserial."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import serial

from cabinet_sim import Cabinet, MonotonicClock, NoticeKind
from cabinet_sim.transports import CabinetLine, MemoryLink, PtyTransport, Shaping
from protocol.slotbus import (
    Command,
    Deframer,
    Empty,
    Frame,
    Identity,
    decode_response,
    encode_request,
)
from protocol.slotbus.constants import wire_time_s
from tests.cabinet_sim.conftest import empty_config

IDENTIFY = encode_request(1, 42, Command.IDENTIFY, Empty())
GET_SLOTS = encode_request(1, 43, Command.GET_SLOTS, Empty())


async def read_frame(reader: asyncio.StreamReader, deframer: Deframer) -> Frame:
    while True:
        data = await asyncio.wait_for(reader.read(4096), 2.0)
        assert data, "the line closed"
        frames = deframer.feed(data)
        if frames:
            return frames[0]


async def test_memory_round_trip() -> None:
    cabinet = Cabinet(empty_config())
    async with MemoryLink(cabinet) as link:
        reader, writer = await link.open_master_streams()
        writer.write(IDENTIFY)
        frame = await read_frame(reader, Deframer())
        assert frame.sequence == 42
        assert isinstance(decode_response(frame).body, Identity)
        writer.close()


async def test_memory_split_bytes() -> None:
    cabinet = Cabinet(empty_config())
    chunks: list[bytes] = []
    async with MemoryLink(cabinet, shaping=Shaping(max_chunk=3, seed=1)) as link:
        reader, writer = await link.open_master_streams()
        writer.write(GET_SLOTS)
        deframer = Deframer()
        while not deframer.stats.frames:
            data = await asyncio.wait_for(reader.read(4096), 2.0)
            chunks.append(data)
            deframer.feed(data)
        writer.close()
    assert deframer.stats.crc_errors == 0


def test_shaping_drops_and_splits() -> None:
    cabinet = Cabinet(empty_config())
    line = CabinetLine(cabinet, pacing=False, shaping=Shaping(max_chunk=4, drop_byte_rate=0.5))
    data = bytes(range(200))
    kept = line._drop_bytes(data)
    assert 60 < len(kept) < 140
    chunks = line._chunks(data)
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= 4
    assert len(chunks) >= 50


async def test_memory_port_comes_back() -> None:
    cabinet = Cabinet(empty_config())
    async with MemoryLink(cabinet) as link:
        reader, writer = await link.open_master_streams()
        cabinet.port_down()
        assert await asyncio.wait_for(reader.read(4096), 2.0) == b""
        writer.close()
        cabinet.port_up()
        await asyncio.wait_for(link.reopened.wait(), 2.0)
        reader, writer = await link.open_master_streams()
        writer.write(IDENTIFY)
        assert (await read_frame(reader, Deframer())).sequence == 42
        writer.close()


def _pyserial_exchange(path: str, request: bytes) -> tuple[bytes, float]:
    with serial.Serial(path, 115200, timeout=2.0) as port:
        started = time.monotonic()
        port.write(request)
        deframer = Deframer()
        received = b""
        while not deframer.stats.frames:
            data = port.read(1)
            assert data, "no response within the timeout"
            data += port.read(port.in_waiting)
            received += data
            deframer.feed(data)
        return received, time.monotonic() - started


async def test_pty_round_trip_with_pyserial() -> None:
    cabinet = Cabinet(empty_config(), clock=MonotonicClock())
    async with PtyTransport(cabinet) as pty:
        received, elapsed = await asyncio.to_thread(_pyserial_exchange, pty.device_path, GET_SLOTS)
    frames = Deframer().feed(received)
    assert len(frames) == 1
    assert frames[0].sequence == 43
    # Paced at 115200 baud: the response cannot arrive faster than its wire time.
    assert elapsed >= wire_time_s(len(received))


async def test_pty_symlink_survives_port_loss(tmp_path: Path) -> None:
    cabinet = Cabinet(empty_config(), clock=MonotonicClock())
    link = tmp_path / "ttySIM0"
    async with PtyTransport(cabinet, link_path=link, pacing=False) as pty:
        first_slave = pty.slave_path
        assert link.resolve() == Path(first_slave or "")
        cabinet.port_down()
        assert not link.exists()
        cabinet.port_up()
        assert link.exists()
        received, _ = await asyncio.to_thread(_pyserial_exchange, str(link), IDENTIFY)
        assert Deframer().feed(received)[0].sequence == 42
    assert not link.exists()


async def test_port_returns_without_traffic(tmp_path: Path) -> None:
    cabinet = Cabinet(empty_config(), clock=MonotonicClock(speed=100.0))
    back = asyncio.Event()
    cabinet.subscribe(lambda notice: back.set() if notice.kind is NoticeKind.PORT_UP else None)
    link = tmp_path / "ttySIM1"
    async with PtyTransport(cabinet, link_path=link, pacing=False):
        cabinet.port_down(1.0)  # 10 ms of real time at speed 100
        assert not link.exists()
        await asyncio.wait_for(back.wait(), 2.0)
        assert link.exists()
