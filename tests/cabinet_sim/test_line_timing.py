"""When the line sends a response: turnaround, pacing against wire instants, and the config."""

from __future__ import annotations

import asyncio
import math

import pytest
from pydantic import ValidationError

from cabinet_sim import Cabinet, ManualClock, SimConfig
from cabinet_sim.transports import CabinetLine, MemoryLink, Shaping
from cabinet_sim.transports.line import TIMER_LEAD_S
from protocol.slotbus import Command, Deframer, Empty, SlotRange, encode_request
from protocol.slotbus.constants import BOARD_TURNAROUND_S, wire_time_s
from tests.cabinet_sim.conftest import empty_config

IDENTIFY = encode_request(1, 5, Command.IDENTIFY, Empty())
GET_BANKS = encode_request(1, 6, Command.GET_BANKS, SlotRange(1, 6))


def _line(turnaround_s: float = 0.001, **config: object) -> CabinetLine:
    cabinet = Cabinet(empty_config(turnaround_s=turnaround_s, **config), clock=ManualClock())
    return CabinetLine(cabinet, pacing=True)


@pytest.mark.parametrize("turnaround_s", [0.0, 0.001, BOARD_TURNAROUND_S])
def test_receive_delay_is_turnaround(turnaround_s: float) -> None:
    cabinet = Cabinet(empty_config(turnaround_s=turnaround_s), clock=ManualClock())
    transmissions = cabinet.receive(IDENTIFY)
    assert [transmission.delay_s for transmission in transmissions] == [turnaround_s]


async def test_response_starts_after_request_end() -> None:
    line = _line(turnaround_s=0.002)
    line._accept(IDENTIFY, arrival=100.0)
    earliest_start, _, chunks = line._outgoing[0]
    assert earliest_start == pytest.approx(100.0 + wire_time_s(len(IDENTIFY)) + 0.002)
    assert Deframer().feed(b"".join(chunks))[0].sequence == 5


async def test_split_request_ends_after_all_bytes() -> None:
    line = _line(turnaround_s=0.0)
    line._accept(IDENTIFY[:3], arrival=100.0)
    # The rest was read at the same moment, but on the wire it follows the first 3 bytes.
    line._accept(IDENTIFY[3:], arrival=100.0)
    earliest_start, _, _ = line._outgoing[0]
    assert earliest_start == pytest.approx(100.0 + wire_time_s(len(IDENTIFY)))


async def test_quiet_line_starts_at_arrival() -> None:
    line = _line(turnaround_s=0.0)
    line._accept(IDENTIFY, arrival=100.0)
    line._accept(IDENTIFY, arrival=200.0)
    assert line._outgoing[1][0] == pytest.approx(200.0 + wire_time_s(len(IDENTIFY)))


async def test_echo_runs_with_request() -> None:
    line = _line()
    line.cabinet.link.local_echo = True
    line._accept(IDENTIFY, arrival=100.0)
    echo = min(line._outgoing)
    assert echo[0] == 100.0
    assert b"".join(echo[2]) == IDENTIFY


async def test_slices_leave_at_wire_instants() -> None:
    line = _line()
    data = bytes(range(54))
    chunks = tuple(line._chunks(data))
    assert [len(chunk) for chunk in chunks] == [23, 23, 8]
    instants = line._write_instants(10.0, chunks)
    assert instants == pytest.approx([10.0 + wire_time_s(n) for n in (23, 46, 54)])


async def test_chunk_gaps_only_between_chunks() -> None:
    cabinet = Cabinet(empty_config(), clock=ManualClock())
    line = CabinetLine(cabinet, pacing=True, shaping=Shaping(chunk_gap_s=0.01))
    chunks = (bytes(23), bytes(8))
    instants = line._write_instants(10.0, chunks)
    assert instants == pytest.approx([10.0 + wire_time_s(23), 10.01 + wire_time_s(31)])


async def test_late_write_does_not_shift_next(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _line()
    timers: list[float] = []

    async def record_timer(when: float) -> None:
        timers.append(when)  # returns at once, as a timer that fired late would

    monkeypatch.setattr(line, "_sleep_until", record_timer)
    written: list[bytes] = []

    async def write(chunk: bytes) -> None:
        written.append(chunk)

    # A start one second in the past: every slice is overdue when its turn comes.
    start = asyncio.get_running_loop().time() - 1.0
    chunks = tuple(line._chunks(bytes(54)))
    await line._transmit(start, chunks, write)
    expected = [start + wire_time_s(n) - TIMER_LEAD_S for n in (23, 46, 54)]
    assert timers == pytest.approx(expected)
    assert written == list(chunks)
    assert line._line_free_at == pytest.approx(start + wire_time_s(54))


async def test_paced_batch_never_early() -> None:
    cabinet = Cabinet(empty_config(turnaround_s=0.0))
    for slot in range(1, 7):
        cabinet.insert_bank(slot)
    cabinet.advance(0.3)
    async with MemoryLink(cabinet, pacing=True) as link:
        reader, writer = await link.open_master_streams()
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(GET_BANKS)
        deframer = Deframer()
        received = b""
        reads = 0
        while not deframer.stats.frames:
            data = await asyncio.wait_for(reader.read(4096), 2.0)
            assert data, "the line closed"
            received += data
            reads += 1
            deframer.feed(data)
        elapsed = loop.time() - started
        writer.close()
    assert len(received) == 147
    assert reads > 1  # paced in slices, not written at once
    # The last byte cannot come before the request and the response crossed the wire, give
    # or take the timer lead.
    assert elapsed >= wire_time_s(len(GET_BANKS) + len(received)) - TIMER_LEAD_S


@pytest.mark.parametrize("turnaround_s", [-0.001, BOARD_TURNAROUND_S + 0.001, math.nan])
def test_turnaround_outside_spec_rejected(turnaround_s: float) -> None:
    with pytest.raises(ValidationError, match=r"turnaround_s .* is outside 0\.\.0\.005 s"):
        SimConfig(turnaround_s=turnaround_s)


def test_turnaround_limits_accepted() -> None:
    assert SimConfig(turnaround_s=0).turnaround_s == 0
    assert SimConfig(turnaround_s=BOARD_TURNAROUND_S).turnaround_s == BOARD_TURNAROUND_S
