"""First contact with a simulated cabinet over the in-memory line."""

from __future__ import annotations

import asyncio

from firmware_bridge import BankReturned, EjectFinished, SlotStateChanged, StockChanged
from protocol.cabinet import EjectOutcome, LinkState, SlotState
from tests.firmware_bridge.conftest import memory_rig, sim_config


async def test_bridge_reads_all_boards() -> None:
    async with memory_rig() as rig:
        snapshot = rig.bridge.snapshot()
        assert [board.link for board in snapshot.boards] == [LinkState.ONLINE] * 2
        assert [slot.state for slot in snapshot.slots] == [SlotState.EMPTY] * 8


async def test_insert_then_eject_taken() -> None:
    async with memory_rig(sim_config()) as rig:
        bank = rig.cabinet.insert_bank(3, charge=95.0)
        returned = await rig.sink.wait_for(BankReturned)
        assert returned.slot == 3
        assert returned.bank_id == bank.bank_id.hex().upper()
        await rig.sink.wait_for(StockChanged, lambda e: e.rentable == 1)
        eject = asyncio.create_task(rig.bridge.eject(3, 1234, window_s=2))
        await rig.sink.wait_for(
            SlotStateChanged, lambda e: e.slot == 3 and e.state is SlotState.AWAITING_TAKE
        )
        rig.cabinet.take(3)
        result = await eject
        assert result.outcome is EjectOutcome.TAKEN
        assert result.bank_id == bank.bank_id.hex().upper()
        finished = rig.sink.of(EjectFinished)
        assert [f.result for f in finished] == [result]
