"""Returns: one BankReturned per physical insert, also unidentified, lost or across restarts."""

from __future__ import annotations

import asyncio

import pytest

from cabinet_sim import Cabinet, ManualClock, MonotonicClock
from firmware_bridge import (
    BankRemoved,
    BankReturned,
    FaultRaised,
    MemoryStore,
    StockChanged,
    poller,
)
from protocol.cabinet import FaultKind, LinkState, SlotState
from protocol.slotbus import Command, LockState
from tests.firmware_bridge.conftest import WAIT_S, Rig, Wrapped, memory_rig, sim_config


async def wait_board(rig: Rig, address: int, state: LinkState) -> None:
    await rig.sink.wait_for(
        StockChanged,
        lambda _: any(
            b.address == address and b.link is state for b in rig.bridge.snapshot().boards
        ),
    )


async def test_unidentified_return_is_reported() -> None:
    async with memory_rig() as rig:
        rig.cabinet.insert_bank(4, readable=False)
        returned = await rig.sink.wait_for(BankReturned)
        fault = await rig.sink.wait_for(FaultRaised, lambda e: e.kind is FaultKind.ID_READ_FAILED)

        assert returned.slot == 4
        assert returned.bank_id is None
        assert not returned.identified
        assert fault.slot == 4
        assert len(rig.sink.of(BankReturned)) == 1


async def test_unseated_return_is_flagged() -> None:
    async with memory_rig() as rig:
        rig.cabinet.insert_bank(2, seated=False)
        returned = await rig.sink.wait_for(BankReturned)

        assert not returned.seated
        assert returned.slot == 2


async def test_return_reads_bank_data() -> None:
    async with memory_rig() as rig:
        bank = rig.cabinet.insert_bank(7, charge=42.0)
        returned = await rig.sink.wait_for(BankReturned)

        assert returned.bank is not None
        assert returned.bank.bank_id == bank.bank_id.hex().upper()
        assert returned.bank.charge == 42
        assert returned.key is not None
        assert not returned.reconciled


async def test_overflow_rebuild_finds_return() -> None:
    """Events lost to a full queue: the return is found by comparing GET_SLOTS."""
    cabinet = Cabinet(sim_config(), clock=ManualClock())
    async with memory_rig(cabinet=cabinet) as rig:
        cabinet.set_board_silent(1)
        await wait_board(rig, 1, LinkState.OFFLINE)
        for _ in range(10):  # at least BANK_INSERTED and BANK_REMOVED per slot and round
            for slot in (1, 2):
                cabinet.insert_bank(slot)
                cabinet.advance(0.3)
                if cabinet.slot(slot).lock is LockState.LOCKED:
                    cabinet.tamper(slot)
                else:
                    cabinet.remove_bank(slot)
            cabinet.advance(0.3)
        bank = cabinet.insert_bank(3)
        cabinet.advance(0.3)
        assert cabinet.board(1).events.dropped > 0

        cabinet.set_board_silent(1, False)
        overflow = await rig.sink.wait_for(
            FaultRaised, lambda e: e.kind is FaultKind.EVENT_OVERFLOW
        )
        found = await rig.sink.wait_for(BankReturned, lambda e: e.slot == 3)

        assert overflow.board == 1
        assert found.reconciled
        assert found.bank_id == bank.bank_id.hex().upper()
        assert len([e for e in rig.sink.of(BankReturned) if e.slot == 3]) == 1


async def test_reboot_rebuild_finds_return() -> None:
    cabinet = Cabinet(sim_config(), clock=ManualClock())
    async with memory_rig(cabinet=cabinet) as rig:
        cabinet.set_board_silent(2)
        await wait_board(rig, 2, LinkState.OFFLINE)
        bank = cabinet.insert_bank(6)
        cabinet.advance(0.3)
        cabinet.power_cycle(2)
        cabinet.advance(1.5)
        cabinet.set_board_silent(2, False)

        found = await rig.sink.wait_for(BankReturned, lambda e: e.slot == 6)
        reset = await rig.sink.wait_for(
            FaultRaised,
            lambda e: (
                e.kind is FaultKind.BOARD_RESET
                and e.board == 2
                and e.key is not None
                and e.key.boot_count == 2
            ),
        )

        assert found.reconciled
        assert found.bank_id == bank.bank_id.hex().upper()
        assert reset.slot == 0


async def test_tamper_reports_removal() -> None:
    async with memory_rig() as rig:
        bank = rig.cabinet.insert_bank(1)
        await rig.sink.wait_for(BankReturned)
        rig.cabinet.tamper(1)
        removed = await rig.sink.wait_for(BankRemoved)
        tamper = await rig.sink.wait_for(FaultRaised, lambda e: e.kind is FaultKind.TAMPER)

        assert removed.bank_id == bank.bank_id.hex().upper()
        assert tamper.slot == 1


async def test_restart_reports_no_duplicate() -> None:
    """Events handed on but never acknowledged are not reported again after a restart."""
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    store = MemoryStore()
    wrapped = Wrapped()
    async with memory_rig(cabinet=cabinet, store=store, wrap=wrapped) as rig:
        wrapped.current.swallow_writes.add(Command.ACK_EVENTS)
        rig.cabinet.insert_bank(2)
        await rig.sink.wait_for(BankReturned)
        while wrapped.current.count(Command.READ_EVENTS) < 5:  # the event is read again
            await rig.sink.wait_for(StockChanged, lambda _: True, within=0.5)
        assert len(rig.sink.of(BankReturned)) == 1
    assert cabinet.board(1).events.pending > 0

    async with memory_rig(cabinet=cabinet, store=store) as rig:
        rig.cabinet.insert_bank(3)
        returned = await rig.sink.wait_for(BankReturned)

        assert returned.slot == 3
        assert len(rig.sink.of(BankReturned)) == 1


async def test_disabled_slot_survives_restart() -> None:
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    store = MemoryStore()
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        await rig.bridge.set_slot_disabled(5, True, "latch bent")
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        slot = rig.bridge.snapshot().slots[4]

        assert slot.state is SlotState.DISABLED
        assert slot.disabled_reason == "latch bent"
        await rig.bridge.set_slot_disabled(5, False, "latch fixed")
        assert store.disabled == {}


async def test_return_while_stopped_and_rebooted() -> None:
    """A board that rebooted while the gateway was stopped lost its events: the saved
    occupancy still lets the return made meanwhile be reported, exactly once."""
    cabinet = Cabinet(sim_config(), clock=ManualClock())
    store = MemoryStore()
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        store.occupancy = rig.bridge.occupancy()
    assert store.occupancy[4] == (False, None)

    bank = cabinet.insert_bank(4)
    cabinet.advance(0.3)
    cabinet.power_cycle(1)
    cabinet.advance(1.5)

    async with memory_rig(cabinet=cabinet, store=store) as rig:
        found = await rig.sink.wait_for(BankReturned, lambda e: e.slot == 4)
        assert found.reconciled
        assert found.bank_id == bank.bank_id.hex().upper()
        assert [e.slot for e in rig.sink.of(BankReturned)] == [4]


async def test_same_boot_restart_ignores_saved_occupancy() -> None:
    """Without a reboot the board's own events are the truth: a stale saved occupancy
    does not invent a return."""
    cabinet = Cabinet(sim_config(), clock=MonotonicClock())
    store = MemoryStore()
    async with memory_rig(cabinet=cabinet, store=store) as rig:
        cabinet.insert_bank(1)
        await rig.sink.wait_for(BankReturned)
        store.occupancy = rig.bridge.occupancy()
    assert store.occupancy[1][0]
    store.occupancy[1] = (False, None)  # stale: the bank was there all along
    empty = 2

    async with memory_rig(cabinet=cabinet, store=store) as rig:
        cabinet.insert_bank(empty)
        returned = await rig.sink.wait_for(BankReturned)
        assert returned.slot == empty
        assert len(rig.sink.of(BankReturned)) == 1


async def test_sink_failure_keeps_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event the sink cannot take stays on the board and is handed on once it can."""
    monkeypatch.setattr(poller, "SINK_RETRY_S", 0.05)
    async with memory_rig() as rig:
        rig.sink.refuse.add(BankReturned)
        rig.cabinet.insert_bank(2)
        await asyncio.wait_for(rig.sink.refused.wait(), WAIT_S)
        assert rig.cabinet.board(1).events.pending > 0

        rig.sink.refuse.clear()
        returned = await rig.sink.wait_for(BankReturned)
        assert returned.slot == 2
        assert len(rig.sink.of(BankReturned)) == 1
