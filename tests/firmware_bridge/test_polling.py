"""Poll scheduling: batched bank reads, quiet boards polled less often, the bus budget."""

from __future__ import annotations

import asyncio
import itertools
import time

from cabinet_sim.config import BankMix
from firmware_bridge import BankHealthReport, BankReturned
from firmware_bridge.poller import BURST_S, PollBudget, next_tick
from protocol.cabinet import EjectOutcome
from protocol.slotbus import Command, Frame
from tests.firmware_bridge.conftest import OffsetClock, Rig, Wrapped, memory_rig, sim_config
from tests.firmware_bridge.test_eject import stock_bank, wait_awaiting_take
from tests.firmware_bridge.test_version3 import wait_commands

FULL = BankMix(fill_ratio=1.0)
IDLE_S = 5.0


def written_commands(wrapped: Wrapped) -> list[Command]:
    return [Command(frame.command_id) for frame in wrapped.current.written]


async def wait_banks_read(rig: Rig, count: int) -> None:
    def enough(_: BankHealthReport) -> bool:
        return len({event.bank_id for event in rig.sink.of(BankHealthReport)}) >= count

    await rig.sink.wait_for(BankHealthReport, enough)


async def test_banks_batched_then_one_by_one() -> None:
    """The first read takes each board's banks in one GET_BANKS. Later reads take one bank
    each, so no periodic exchange carries a whole board's bank data."""
    wrapped = Wrapped()
    async with memory_rig(sim_config(banks=FULL), wrap=wrapped, bank_interval_s=0.4) as rig:
        await wait_banks_read(rig, 8)
        start = len(wrapped.current.written)
        # Board 1 has four banks: wait for a second round of its bank reads.
        later = await wait_commands(wrapped, start, lambda sent: sent.count(Command.GET_BANK) >= 4)

        commands = written_commands(wrapped)
        assert commands.count(Command.GET_BANKS) == 2  # one per board, at the start
        assert commands.index(Command.GET_BANK) >= start  # none before the batched reads
        assert Command.GET_BANKS not in later


async def test_version_1_board_falls_back_to_get_bank() -> None:
    wrapped = Wrapped()
    async with memory_rig(sim_config(banks=FULL, slotbus_version=1), wrap=wrapped) as rig:
        await wait_banks_read(rig, 8)

        commands = written_commands(wrapped)
        assert Command.GET_BANKS not in commands
        assert commands.count(Command.GET_BANK) >= 8


async def test_quiet_board_polled_at_idle_interval() -> None:
    wrapped = Wrapped()
    polls: list[float] = []
    async with memory_rig(
        wrap=wrapped,
        event_poll_interval_s=0.02,
        idle_event_poll_interval_s=0.3,
        idle_after_s=0.0,
        status_interval_s=60.0,
    ) as rig:
        four_polls = asyncio.Event()

        def note(frame: Frame) -> None:
            if frame.address == 1 and frame.command_id == Command.READ_EVENTS:
                polls.append(time.monotonic())
                if len(polls) >= 4:
                    four_polls.set()

        wrapped.current.on_write = note
        async with asyncio.timeout(10):
            await four_polls.wait()

        gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
        # A busy board would be polled every 0.02 s; a quiet one waits for the next 0.3 s tick.
        assert min(gaps) > 0.2

        rig.cabinet.insert_bank(2)
        returned = await rig.sink.wait_for(BankReturned)
        assert returned.slot == 2


async def test_eject_makes_quiet_board_busy() -> None:
    wrapped = Wrapped()
    # Start the bridge's clock just after a 5 s tick, so no idle poll is due during the test.
    clock = OffsetClock()
    clock.offset = IDLE_S - time.monotonic() % IDLE_S + 0.01
    async with memory_rig(
        wrap=wrapped,
        clock=clock,
        event_poll_interval_s=0.02,
        idle_event_poll_interval_s=IDLE_S,
        idle_after_s=0.0,
    ) as rig:
        await stock_bank(rig, 3)
        eject = asyncio.create_task(rig.bridge.eject(3, 4321, window_s=5))
        await wait_awaiting_take(rig, 3)
        rig.cabinet.take(3)
        result = await eject

        assert result.outcome is EjectOutcome.TAKEN
        # An event poll saw the take. Had the board stayed on the 5 s idle interval, the
        # eject would have asked QUERY_UNLOCK after waiting 2 s for an event.
        assert Command.QUERY_UNLOCK not in written_commands(wrapped)


def test_next_tick_is_after_now() -> None:
    assert next_tick(10.0, 1.0) == 11.0
    assert next_tick(10.2, 1.0) == 11.0
    assert next_tick(10.2, 5.0) == 15.0


def test_budget_allows_burst_then_paces() -> None:
    budget = PollBudget(0.5, now=0.0)

    assert budget.available_at(0.0) == 0.0
    budget.spend(BURST_S, now=0.0)
    assert budget.available_at(0.0) == 0.0
    budget.spend(0.05, now=0.0)
    # 0.05 s of bus time overspent at half the bus: wait 0.1 s.
    assert abs(budget.available_at(0.0) - 0.1) < 1e-9


def test_budget_of_whole_bus_never_waits() -> None:
    budget = PollBudget(1.0, now=0.0)

    budget.spend(10.0, now=0.0)
    assert budget.available_at(0.0) == 0.0
