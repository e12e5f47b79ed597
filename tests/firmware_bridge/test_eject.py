"""Ejects against the simulated cabinet: exactly one outcome, never a guessed one."""

from __future__ import annotations

import asyncio
import contextlib

from cabinet_sim import Cabinet, InjectedFault, MonotonicClock
from firmware_bridge import (
    BankReturned,
    EjectFinished,
    EjectResult,
    LateEjectOutcome,
    MemoryStore,
    SlotStateChanged,
    StockChanged,
)
from protocol.cabinet import EjectFailReason, EjectOutcome, EjectRejectReason, SlotState
from protocol.slotbus import Command
from tests.firmware_bridge.conftest import OffsetClock, Rig, Wrapped, memory_rig, sim_config


async def stock_bank(rig: Rig, slot: int, charge: float = 95.0) -> str:
    """Insert a bank and wait until the bridge counts it as rentable; return its id."""
    before = len(rig.sink.of(BankReturned))
    bank = rig.cabinet.insert_bank(slot, charge=charge)
    await rig.sink.wait_for(BankReturned, lambda e: e.slot == slot)
    assert len(rig.sink.of(BankReturned)) == before + 1
    await rig.sink.wait_for(
        StockChanged,
        lambda _: any(s.rentable for s in rig.bridge.snapshot().slots if s.slot == slot),
    )
    return bank.bank_id.hex().upper()


async def wait_awaiting_take(rig: Rig, slot: int) -> None:
    await rig.sink.wait_for(
        SlotStateChanged, lambda e: e.slot == slot and e.state is SlotState.AWAITING_TAKE
    )


def finished(rig: Rig, token: int) -> list[EjectResult]:
    return [event.result for event in rig.sink.of(EjectFinished) if event.result.token == token]


async def test_eject_taken_reports_bank() -> None:
    async with memory_rig() as rig:
        bank_id = await stock_bank(rig, 3)
        eject = asyncio.create_task(rig.bridge.eject(3, 1234, window_s=5))
        await wait_awaiting_take(rig, 3)
        rig.cabinet.take(3)
        result = await eject

        assert result.outcome is EjectOutcome.TAKEN
        assert result.bank_id == bank_id
        assert result.charge is not None
        assert result.charge >= 80
        assert result.temperature_c is not None
        assert finished(rig, 1234) == [result]
        await rig.sink.wait_for(
            SlotStateChanged, lambda e: e.slot == 3 and e.state is SlotState.EMPTY
        )


async def test_eject_best_slot_picks_fullest() -> None:
    async with memory_rig() as rig:
        await stock_bank(rig, 2, charge=85.0)
        fullest = await stock_bank(rig, 6, charge=99.0)
        eject = asyncio.create_task(rig.bridge.eject(None, 77, window_s=5))
        await wait_awaiting_take(rig, 6)
        rig.cabinet.take(6)
        result = await eject

        assert result.slot == 6
        assert result.bank_id == fullest


async def test_eject_not_taken_locks_again() -> None:
    async with memory_rig(speed=10.0) as rig:
        bank_id = await stock_bank(rig, 1)
        result = await rig.bridge.eject(1, 55, window_s=1)

        assert result.outcome is EjectOutcome.NOT_TAKEN
        assert result.bank_id == bank_id
        assert finished(rig, 55) == [result]
        snapshot = rig.bridge.snapshot().slots[0]
        assert snapshot.bank_id == bank_id


async def test_eject_lock_fault_fails_once() -> None:
    async with memory_rig() as rig:
        await stock_bank(rig, 2)
        rig.cabinet.set_fault(2, InjectedFault.LOCK_STUCK)
        result = await rig.bridge.eject(2, 9, window_s=5)

        assert result.outcome is EjectOutcome.FAILED
        assert result.fail_reason is EjectFailReason.LOCK_FAULT
        assert not result.uncertain
        await asyncio.sleep(0)  # let the poller hand on the UNLOCK_LOCK_FAULT event
        assert finished(rig, 9) == [result]
        assert rig.sink.of(LateEjectOutcome) == []


async def test_eject_rejections() -> None:
    async with memory_rig() as rig:
        await stock_bank(rig, 1)
        rig.cabinet.insert_bank(2, charge=20.0)
        await rig.sink.wait_for(BankReturned, lambda e: e.slot == 2)
        await rig.bridge.set_slot_disabled(1, True, "door repair")
        cases = {
            (None, 1): EjectRejectReason.NO_RENTABLE_BANK,
            (1, 2): EjectRejectReason.SLOT_DISABLED,
            (2, 3): EjectRejectReason.SLOT_NOT_RENTABLE,
            (4, 4): EjectRejectReason.SLOT_EMPTY,
            (99, 5): EjectRejectReason.UNKNOWN_SLOT,
        }
        for (slot, token), reason in cases.items():
            result = await rig.bridge.eject(slot, token)
            assert result.outcome is EjectOutcome.REJECTED, (slot, result)
            assert result.reject_reason is reason, (slot, result)

        assert rig.store.disabled == {1: "door repair"}


async def test_eject_repeated_token_acts_once() -> None:
    wrapped = Wrapped()
    async with memory_rig(speed=10.0, wrap=wrapped) as rig:
        await stock_bank(rig, 1)
        first, second = await asyncio.gather(
            rig.bridge.eject(1, 4242, window_s=1), rig.bridge.eject(1, 4242, window_s=1)
        )
        third = await rig.bridge.eject(1, 4242, window_s=1)

        assert first == second == third
        assert first.outcome is EjectOutcome.NOT_TAKEN
        assert wrapped.current.count(Command.UNLOCK) == 1
        assert len(finished(rig, 4242)) == 1


async def test_eject_expired_writes_nothing() -> None:
    wrapped = Wrapped()
    clock = OffsetClock()
    async with memory_rig(wrap=wrapped, clock=clock) as rig:
        await stock_bank(rig, 1)
        result = await rig.bridge.eject(1, 8, deadline=clock.monotonic() - 0.001)

        assert result.reject_reason is EjectRejectReason.EXPIRED
        assert wrapped.current.count(Command.UNLOCK) == 0


async def test_unlock_never_written_after_deadline() -> None:
    """The deadline passes while the first UNLOCK waits for its lost reply: no second write."""
    wrapped = Wrapped()
    clock = OffsetClock()
    async with memory_rig(wrap=wrapped, clock=clock) as rig:
        await stock_bank(rig, 1)
        link = wrapped.current
        link.drop_replies[Command.UNLOCK] = 1

        def jump_past_deadline(frame: object) -> None:
            if link.count(Command.UNLOCK) == 1:
                clock.offset += 0.5

        link.on_write = jump_past_deadline
        eject = asyncio.create_task(
            rig.bridge.eject(1, 31, window_s=5, deadline=clock.monotonic() + 0.3)
        )
        await wait_awaiting_take(rig, 1)
        rig.cabinet.take(1)
        result = await eject

        assert link.count(Command.UNLOCK) == 1
        assert result.outcome is EjectOutcome.TAKEN
        assert link.count(Command.QUERY_UNLOCK) >= 1


async def test_lost_unlock_reply_resolved_by_query() -> None:
    wrapped = Wrapped()
    async with memory_rig(wrap=wrapped) as rig:
        bank_id = await stock_bank(rig, 5)
        wrapped.current.drop_replies[Command.UNLOCK] = 3
        eject = asyncio.create_task(rig.bridge.eject(5, 600, window_s=5))
        await wait_awaiting_take(rig, 5)
        rig.cabinet.take(5)
        result = await eject

        assert result.outcome is EjectOutcome.TAKEN
        assert result.bank_id == bank_id
        assert not result.uncertain
        assert rig.cabinet.slot(5).bank is None


async def test_silent_board_gives_uncertain_then_late() -> None:
    async with memory_rig(speed=10.0, offline_after=2) as rig:
        await stock_bank(rig, 1)
        opened = asyncio.Event()

        def silence_after_open(event: object) -> None:
            if isinstance(event, SlotStateChanged) and event.state is SlotState.AWAITING_TAKE:
                rig.cabinet.set_board_silent(1)
                opened.set()

        original = rig.sink.handle

        async def handle(event: object) -> None:
            silence_after_open(event)
            await original(event)  # type: ignore[arg-type]

        rig.sink.handle = handle  # type: ignore[method-assign]
        result = await rig.bridge.eject(1, 777, window_s=1)

        assert opened.is_set()
        assert result.outcome is EjectOutcome.FAILED
        assert result.uncertain
        rig.cabinet.set_board_silent(1, False)
        late = await rig.sink.wait_for(LateEjectOutcome, lambda e: e.result.token == 777)
        assert late.result.outcome is EjectOutcome.NOT_TAKEN
        assert finished(rig, 777) == [result]


async def test_resolve_after_restart_does_not_repeat() -> None:
    """A new bridge learns the outcome of the previous run's eject; it never unlocks again."""
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    store = MemoryStore()
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        await stock_bank(rig, 2)
        eject = asyncio.create_task(rig.bridge.eject(2, 9001, window_s=30))
        await wait_awaiting_take(rig, 2)
    eject.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await eject
    cabinet.take(2)  # the renter takes the bank while the gateway restarts

    wrapped = Wrapped()
    async with memory_rig(cabinet=cabinet, store=store, wrap=wrapped) as rig:
        result = await rig.bridge.resolve_eject(2, 9001, deadline=None)

        assert result.outcome is EjectOutcome.TAKEN
        assert wrapped.current.count(Command.UNLOCK) == 0


async def test_resolve_unknown_token_ejects_once() -> None:
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    store = MemoryStore()
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        await stock_bank(rig, 3)

    wrapped = Wrapped()
    async with memory_rig(cabinet=cabinet, store=store, wrap=wrapped) as rig:
        resolving = asyncio.create_task(rig.bridge.resolve_eject(3, 5150, deadline=None))
        await wait_awaiting_take(rig, 3)
        cabinet.take(3)
        result = await resolving

        assert result.outcome is EjectOutcome.TAKEN
        assert wrapped.current.count(Command.UNLOCK) == 1
        assert wrapped.current.count(Command.QUERY_UNLOCK) >= 1


async def test_resolve_after_reboot_is_interrupted() -> None:
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    store = MemoryStore()
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        await stock_bank(rig, 3)
    cabinet.power_cycle(1)
    cabinet.board(1).ready_at = cabinet.now  # no reboot pause, to keep the test short

    wrapped = Wrapped()
    async with memory_rig(cabinet=cabinet, store=store, wrap=wrapped) as rig:
        result = await rig.bridge.resolve_eject(3, 5151, deadline=None)

        assert result.outcome is EjectOutcome.FAILED
        assert result.fail_reason is EjectFailReason.INTERRUPTED
        assert result.uncertain
        assert wrapped.current.count(Command.UNLOCK) == 0
