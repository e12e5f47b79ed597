"""Link states: an offline board is reported and does not hold up the others."""

from __future__ import annotations

import asyncio
import time

from cabinet_sim.transports import Shaping
from firmware_bridge import BoardLinkChanged, EjectFinished, FaultRaised, SlotStateChanged
from protocol.cabinet import EjectFailReason, EjectOutcome, FaultKind, LinkState, SlotState
from tests.firmware_bridge.conftest import memory_rig, sim_config
from tests.firmware_bridge.test_eject import stock_bank

UNLOCK_ON_TIME_S = 0.5
"""An eject on a healthy board opens the lock within this, whatever the other boards do."""


async def test_offline_board_does_not_delay_eject() -> None:
    async with memory_rig(sim_config(boards=3)) as rig:
        await stock_bank(rig, 2)
        rig.cabinet.set_board_silent(3)
        offline = await rig.sink.wait_for(
            BoardLinkChanged, lambda e: e.board == 3 and e.state is LinkState.OFFLINE
        )
        fault = await rig.sink.wait_for(
            FaultRaised, lambda e: e.kind is FaultKind.BOARD_OFFLINE and e.board == 3
        )
        assert offline.reason.startswith("no reply")
        assert fault.slot == 0

        latencies = []
        for token in range(100, 105):
            await rig.sink.wait_until(lambda: rig.bridge.snapshot().slots[1].rentable)
            started = time.monotonic()
            eject = asyncio.create_task(rig.bridge.eject(2, token, window_s=30))
            await rig.sink.wait_until(
                lambda: rig.bridge.snapshot().slots[1].state is SlotState.AWAITING_TAKE
            )
            latencies.append(time.monotonic() - started)
            await rig.bridge.lock(2)
            result = await eject
            assert result.outcome is EjectOutcome.NOT_TAKEN

        assert max(latencies) < UNLOCK_ON_TIME_S, latencies
        snapshot = rig.bridge.snapshot()
        assert [b.link for b in snapshot.boards] == [
            LinkState.ONLINE,
            LinkState.ONLINE,
            LinkState.OFFLINE,
        ]
        assert {s.state for s in snapshot.slots if s.board == 3} == {SlotState.UNKNOWN}


async def test_eject_on_offline_board_fails_fast() -> None:
    async with memory_rig() as rig:
        await stock_bank(rig, 6)
        rig.cabinet.set_board_silent(2)
        await rig.sink.wait_for(
            BoardLinkChanged, lambda e: e.board == 2 and e.state is LinkState.OFFLINE
        )
        result = await rig.bridge.eject(6, 1, window_s=5)

        assert result.outcome is EjectOutcome.FAILED
        assert result.fail_reason is EjectFailReason.BOARD_OFFLINE
        assert not result.uncertain


async def test_board_comes_back_online() -> None:
    async with memory_rig(probe_backoff={"initial_s": 0.05, "max_s": 0.2}) as rig:
        rig.cabinet.set_board_silent(1)
        await rig.sink.wait_for(
            BoardLinkChanged, lambda e: e.board == 1 and e.state is LinkState.OFFLINE
        )
        rig.cabinet.set_board_silent(1, False)
        back = await rig.sink.wait_for(
            BoardLinkChanged,
            lambda e: (
                e.board == 1 and e.state is LinkState.ONLINE and e.previous is LinkState.OFFLINE
            ),
        )
        assert back.reason == ""
        online = await rig.sink.wait_for(FaultRaised, lambda e: e.kind is FaultKind.BOARD_ONLINE)
        assert online.board == 1


async def test_split_delayed_bytes_still_work() -> None:
    shaping = Shaping(max_chunk=3, chunk_gap_s=0.0005, extra_delay_s=0.01, seed=7)
    async with memory_rig(shaping=shaping) as rig:
        bank_id = await stock_bank(rig, 4)
        eject = asyncio.create_task(rig.bridge.eject(4, 2, window_s=5))
        await rig.sink.wait_for(
            SlotStateChanged, lambda e: e.slot == 4 and e.state is SlotState.AWAITING_TAKE
        )
        rig.cabinet.take(4)
        result = await eject

        assert result.outcome is EjectOutcome.TAKEN
        assert result.bank_id == bank_id
        assert rig.bridge.stats().crc_errors == 0


async def test_dropped_bytes_cost_retries_only() -> None:
    shaping = Shaping(drop_byte_rate=0.01, seed=3)
    async with memory_rig(shaping=shaping, offline_after=10) as rig:
        for slot in (1, 5):
            rig.cabinet.insert_bank(slot, charge=95.0)
        await rig.sink.wait_until(
            lambda: sum(s.rentable for s in rig.bridge.snapshot().slots) == 2, within=10
        )
        result = await rig.bridge.eject(5, 3, window_s=1)
        stats = rig.bridge.stats()

        assert result.outcome in (EjectOutcome.NOT_TAKEN, EjectOutcome.TAKEN)
        assert len([e for e in rig.sink.of(EjectFinished) if e.result.token == 3]) == 1
        assert stats.timeouts > 0 or stats.bytes_dropped > 0
