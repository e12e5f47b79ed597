"""Slot-bus version 3 in the bridge: one slot's status after an event and the acknowledgement
carried by the next event read. Older boards and boards that changed firmware fall back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from firmware_bridge import BankReturned
from protocol.slotbus import AckAndRead, Command, Frame, SlotRange, decode_request
from tests.firmware_bridge.conftest import WAIT_S, Rig, Wrapped, memory_rig, sim_config

QUIET = {"status_interval_s": 3600.0, "bank_interval_s": 3600.0}
"""No periodic status or bank reads, so every request after a return is due to the return."""


def requests_since(wrapped: Wrapped, start: int) -> list[tuple[Command, object]]:
    """Requests to board 1 written since index `start`."""
    frames = [f for f in wrapped.current.written[start:] if f.address == 1]
    return [(Command(f.command_id), decode_request(f).body) for f in frames]


async def wait_written(wrapped: Wrapped, command: Command) -> Frame:
    """Return the first `command` request written from now on."""
    seen: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()

    def note(frame: Frame) -> None:
        if frame.command_id == command and not seen.done():
            seen.set_result(frame)

    wrapped.current.on_write = note
    async with asyncio.timeout(WAIT_S):
        return await seen


async def wait_commands(
    wrapped: Wrapped, start: int, done: Callable[[list[Command]], bool]
) -> list[Command]:
    """Wait until `done` holds for board 1's requests written since `start`; return them."""
    reached = asyncio.Event()

    def commands() -> list[Command]:
        return [command for command, _ in requests_since(wrapped, start)]

    def check(_: Frame) -> None:
        if done(commands()):
            reached.set()

    wrapped.current.on_write = check
    if not done(commands()):
        async with asyncio.timeout(WAIT_S):
            await reached.wait()
    return commands()


async def return_bank(rig: Rig, wrapped: Wrapped, slot: int) -> int:
    """Put a bank into `slot`; return the index of the first request written after it."""
    start = len(wrapped.current.written)
    rig.cabinet.insert_bank(slot)
    await rig.sink.wait_for(BankReturned, lambda e: e.slot == slot)
    return start


async def test_return_reads_one_slot() -> None:
    wrapped = Wrapped()
    async with memory_rig(sim_config(), wrap=wrapped, **QUIET) as rig:
        start = await return_bank(rig, wrapped, 3)
        frame = await wait_written(wrapped, Command.ACK_AND_READ_EVENTS)
        board = rig.cabinet.board(1)

        sent = requests_since(wrapped, start)
        commands = [command for command, _ in sent]
        assert (Command.GET_SLOT_RANGE, SlotRange(3, 1)) in sent
        assert Command.GET_SLOTS not in commands
        assert Command.ACK_EVENTS not in commands
        ack = decode_request(frame).body
        assert isinstance(ack, AckAndRead)
        assert ack.up_to == board.events.last_id
        assert ack.boot_count == board.boot_count & 0xFFFF
        assert rig.bridge.snapshot().slots[2].bank_id is not None


async def test_acknowledged_events_leave_the_board() -> None:
    wrapped = Wrapped()
    async with memory_rig(sim_config(), wrap=wrapped, **QUIET) as rig:
        await return_bank(rig, wrapped, 2)
        await wait_written(wrapped, Command.ACK_AND_READ_EVENTS)
        # The reply to that request follows on the next loop turns; a later read proves it.
        await wait_written(wrapped, Command.READ_EVENTS)

        assert rig.cabinet.board(1).events.pending == 0


@pytest.mark.parametrize("version", [1, 2])
async def test_older_board_uses_version_2(version: int) -> None:
    wrapped = Wrapped()
    async with memory_rig(sim_config(slotbus_version=version), wrap=wrapped, **QUIET) as rig:
        start = await return_bank(rig, wrapped, 2)
        await wait_written(wrapped, Command.GET_SLOTS)

        commands = [command for command, _ in requests_since(wrapped, start)]
        assert Command.ACK_EVENTS in commands
        assert Command.GET_SLOT_RANGE not in commands
        assert Command.ACK_AND_READ_EVENTS not in commands


async def test_rejected_capability_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    """A board identified as version 3 whose firmware went back to version 2 without a reboot."""
    wrapped = Wrapped()
    async with memory_rig(sim_config(), wrap=wrapped, **QUIET) as rig:
        board = rig.cabinet.board(1)
        board.config = board.config.model_copy(update={"slotbus_version": 2})
        start = await return_bank(rig, wrapped, 1)
        await return_bank(rig, wrapped, 4)
        await wait_commands(wrapped, start, lambda sent: sent.count(Command.ACK_EVENTS) >= 2)
        commands = await wait_commands(
            wrapped, start, lambda sent: sent.count(Command.GET_SLOTS) >= 2
        )

        # Each version-3 command was tried once, then never again on this board.
        assert commands.count(Command.GET_SLOT_RANGE) == 1
        assert commands.count(Command.ACK_AND_READ_EVENTS) == 1
        assert board.events.pending == 0
        assert "returned UNKNOWN_COMMAND for GET_SLOT_RANGE" in caplog.text
        assert "returned UNKNOWN_COMMAND for ACK_AND_READ_EVENTS" in caplog.text


async def test_periodic_status_read_in_parts() -> None:
    """A 4-slot board's status every 0.2 s: one slot per exchange, never the whole board."""
    wrapped = Wrapped()
    async with memory_rig(sim_config(), wrap=wrapped, status_interval_s=0.2) as rig:
        start = len(wrapped.current.written)
        await wait_commands(wrapped, start, lambda sent: sent.count(Command.GET_SLOT_RANGE) >= 8)
        rig.cabinet.insert_bank(4)
        await rig.sink.wait_for(BankReturned, lambda e: e.slot == 4)

        sent = requests_since(wrapped, start)
        ranges = {body for command, body in sent if command is Command.GET_SLOT_RANGE}
        assert ranges == {SlotRange(slot, 1) for slot in range(1, 5)}
        assert Command.GET_SLOTS not in [command for command, _ in sent]
