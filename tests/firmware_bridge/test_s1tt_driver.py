"""The S1TT driver against the simulator's slot boards, over the in-memory line and a pty."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cabinet_sim import Cabinet, MonotonicClock, SimConfig
from cabinet_sim.config import BankMix, S1ttConfig
from cabinet_sim.transports import MemoryLink, PtyTransport
from firmware_bridge import (
    BankRemoved,
    BankReturned,
    BridgeConfig,
    ByteLink,
    EjectFinished,
    FaultRaised,
    MemoryStore,
    SlotDriver,
    create_bridge,
)
from firmware_bridge.drivers.s1tt import S1ttDriver
from firmware_bridge.drivers.s1tt_line import REPLY_TIMEOUT_S
from protocol.cabinet import EjectFailReason, EjectOutcome, FaultKind, LinkState, SlotState
from protocol.s1tt import Command, Deframer
from tests.firmware_bridge.conftest import WAIT_S, bridge_config, memory_opener
from tests.firmware_bridge.test_gzxj_driver import StoringSink, driven

SETTLE_S = 3.0
"""SLOTS shows the old bank for 3 s after an UNLOCK, so the driver waits that long."""


def s1tt_sim(**changes: Any) -> SimConfig:
    """Boards 1 and 2 of 4 slots each, full of rentable banks; the latch returns after 2 s."""
    values: dict[str, Any] = {
        "protocol": "s1tt",
        "boards": (1, 2),
        "slots_per_board": 4,
        "pacing": False,
        "banks": BankMix(fill_ratio=1.0, rentable_share=1.0),
        "s1tt": S1ttConfig(latch_open_s=2),
    }
    values.update(changes)
    return SimConfig(**values)


def serial_of(bank_id: bytes) -> str:
    """Return the S1TT serial the simulator gives a bank: the last 5 id bytes in hex."""
    return bank_id[-5:].hex().upper()


class CountingLink:
    """Counts written requests per command and drops chosen replies, as lost on the line."""

    def __init__(self, inner: ByteLink) -> None:
        self.inner = inner
        self.written: list[int] = []
        self.drop_reply_to: set[int] = set()  # command ids whose next reply is lost
        self._last: int | None = None

    @property
    def description(self) -> str:
        return self.inner.description

    async def read(self) -> bytes:
        while True:
            data = await self.inner.read()
            if self._last in self.drop_reply_to:
                self.drop_reply_to.discard(self._last)
                continue
            return data

    async def write(self, data: bytes) -> None:
        deframer = Deframer()
        deframer.feed(data)
        for frame in deframer.gap():
            self.written.append(frame.command_id)
            self._last = frame.command_id
        await self.inner.write(data)

    def close(self) -> None:
        self.inner.close()


@dataclass
class S1ttRig:
    cabinet: Cabinet
    driver: S1ttDriver
    sink: StoringSink
    store: MemoryStore
    link: CountingLink

    def state(self, slot: int) -> SlotState:
        return self.driver.snapshot().slots[slot - 1].state


def driver_config(port: str, sim: SimConfig, **overrides: Any) -> BridgeConfig:
    values: dict[str, Any] = {"protocol": "s1tt", "settle_s": SETTLE_S}
    values.update(overrides)
    return bridge_config(port, sim, **values)


@contextlib.asynccontextmanager
async def s1tt_rig(
    cabinet: Cabinet | None = None, store: MemoryStore | None = None, **config: Any
) -> AsyncIterator[S1ttRig]:
    cabinet = cabinet or Cabinet(s1tt_sim(), clock=MonotonicClock())
    store = store or MemoryStore()
    sink = StoringSink(store)
    links: list[CountingLink] = []

    def wrap(inner: ByteLink) -> ByteLink:
        links.append(CountingLink(inner))
        return links[-1]

    async with MemoryLink(cabinet) as line:
        settings = driver_config("memory", cabinet.config, **config)
        driver = create_bridge(settings, sink, store, opener=memory_opener(line, wrap))
        assert isinstance(driver, S1ttDriver)
        sink.driver = driver
        async with driven(driver):
            yield S1ttRig(cabinet, driver, sink, store, links[-1])


async def wait_state(rig: S1ttRig, slot: int, state: SlotState) -> None:
    await rig.sink.wait_until(lambda: rig.state(slot) is state)


async def test_rent_taken() -> None:
    async with s1tt_rig() as rig:
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[2].rentable)
        bank_id = rig.driver.snapshot().slots[2].bank_id
        eject = asyncio.create_task(rig.driver.eject(3, token=0x1001))
        await wait_state(rig, 3, SlotState.AWAITING_TAKE)
        bank = rig.cabinet.take(3)
        result = await asyncio.wait_for(eject, WAIT_S + SETTLE_S)

        assert result.outcome is EjectOutcome.TAKEN
        assert result.bank_id == bank_id == serial_of(bank.bank_id)
        await wait_state(rig, 3, SlotState.EMPTY)
        assert rig.sink.of(BankRemoved) == []
        assert [e.result for e in rig.sink.of(EjectFinished)] == [result]
        assert rig.link.written.count(Command.UNLOCK) == 1
        stats = rig.driver.stats()
        assert stats.frames_sent > 0
        assert stats.frames_received > 0


async def test_rent_not_taken() -> None:
    async with s1tt_rig() as rig:
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[1].rentable)
        result = await asyncio.wait_for(rig.driver.eject(2, token=0x1002), WAIT_S + SETTLE_S)

        assert result.outcome is EjectOutcome.NOT_TAKEN
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[1].rentable)
        assert [e for e in rig.sink.of(FaultRaised) if e.slot != 0] == []
        assert rig.sink.of(BankRemoved) == []


async def test_lost_unlock_reply_not_repeated() -> None:
    sim = s1tt_sim(s1tt=S1ttConfig(latch_open_s=30))
    async with s1tt_rig(Cabinet(sim, clock=MonotonicClock())) as rig:
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[3].rentable)
        rig.link.drop_reply_to.add(Command.UNLOCK)
        eject = asyncio.create_task(rig.driver.eject(4, token=0x1003))
        await rig.sink.wait_until(
            lambda: rig.state(4) is SlotState.AWAITING_TAKE, within=REPLY_TIMEOUT_S + WAIT_S
        )
        rig.cabinet.take(4)
        result = await asyncio.wait_for(eject, WAIT_S + SETTLE_S)

        assert result.outcome is EjectOutcome.TAKEN
        assert not result.uncertain
        assert rig.link.written.count(Command.UNLOCK) == 1


async def test_return_identified_and_not() -> None:
    sim = s1tt_sim(banks=BankMix(fill_ratio=0.0))
    async with s1tt_rig(Cabinet(sim, clock=MonotonicClock())) as rig:
        bank = rig.cabinet.insert_bank(5, charge=95)
        returned = await rig.sink.wait_for(BankReturned)
        rig.cabinet.insert_bank(6, readable=False)
        unreadable = await rig.sink.wait_for(BankReturned, lambda e: e.slot == 6)
        fault = await rig.sink.wait_for(FaultRaised, lambda e: e.slot == 6)

        assert returned.slot == 5
        assert returned.identified
        assert returned.bank_id == serial_of(bank.bank_id)
        assert not unreadable.identified
        assert unreadable.bank_id is None
        assert fault.kind is FaultKind.ID_READ_FAILED
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[4].rentable)
        await wait_state(rig, 6, SlotState.FAULTED)
        assert len(rig.sink.of(BankReturned)) == 2


async def test_tamper_reported() -> None:
    async with s1tt_rig() as rig:
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[0].bank_id is not None)
        bank_id = rig.driver.snapshot().slots[0].bank_id
        rig.cabinet.tamper(1)
        fault = await rig.sink.wait_for(FaultRaised, lambda e: e.kind is FaultKind.TAMPER)
        removed = await rig.sink.wait_for(BankRemoved)

        assert fault.slot == 1
        assert removed.slot == 1
        assert removed.bank_id == bank_id
        assert rig.state(1) is SlotState.FAULTED


async def test_board_offline_other_serves() -> None:
    async with s1tt_rig() as rig:
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[5].rentable)
        rig.cabinet.set_board_silent(1, True)
        await rig.sink.wait_until(
            lambda: rig.driver.snapshot().boards[0].link is LinkState.OFFLINE, within=2 * WAIT_S
        )
        offline = await rig.driver.eject(1, token=0x1005)
        served = asyncio.create_task(rig.driver.eject(6, token=0x1006))
        await wait_state(rig, 6, SlotState.AWAITING_TAKE)
        rig.cabinet.take(6)

        assert offline.outcome is EjectOutcome.FAILED
        assert offline.fail_reason is EjectFailReason.BOARD_OFFLINE
        assert not offline.uncertain
        assert (await asyncio.wait_for(served, WAIT_S + SETTLE_S)).outcome is EjectOutcome.TAKEN
        rig.cabinet.set_board_silent(1, False)
        await rig.sink.wait_until(
            lambda: rig.driver.snapshot().boards[0].link is LinkState.ONLINE, within=2 * WAIT_S
        )


async def test_restart_no_duplicates() -> None:
    cabinet = Cabinet(s1tt_sim(banks=BankMix(fill_ratio=0.0)), clock=MonotonicClock())
    store = MemoryStore()
    async with s1tt_rig(cabinet, store) as rig:
        rig.cabinet.insert_bank(2, charge=95)
        await rig.sink.wait_for(BankReturned)
    rig.cabinet.insert_bank(3, charge=95)  # while the gateway is down

    async with s1tt_rig(cabinet, store) as rig:
        late = await rig.sink.wait_for(BankReturned)
        resolved = await rig.driver.resolve_eject(2, 0x2001, deadline=None)

        assert late.slot == 3
        assert len(rig.sink.of(BankReturned)) == 1
        assert resolved.outcome is EjectOutcome.FAILED
        assert resolved.fail_reason is EjectFailReason.INTERRUPTED
        assert resolved.uncertain
        assert Command.UNLOCK not in rig.link.written


async def test_pty_rent_and_return(tmp_path: Path) -> None:
    sim = s1tt_sim(pacing=True, banks=BankMix(fill_ratio=0.5, rentable_share=1.0), seed=3)
    cabinet = Cabinet(sim, clock=MonotonicClock())
    store = MemoryStore()
    sink = StoringSink(store)
    async with PtyTransport(cabinet, link_path=tmp_path / "ttyS1TT") as pty:
        settings = driver_config(pty.device_path, sim)
        driver: SlotDriver = create_bridge(settings, sink, store)
        sink.driver = driver
        async with driven(driver):
            await sink.wait_until(lambda: any(s.rentable for s in driver.snapshot().slots))
            empty = next(s.slot for s in driver.snapshot().slots if s.state is SlotState.EMPTY)
            eject = asyncio.create_task(driver.eject(None, token=0x3001))
            await sink.wait_until(
                lambda: any(s.state is SlotState.AWAITING_TAKE for s in driver.snapshot().slots)
            )
            opened = next(
                s.slot for s in driver.snapshot().slots if s.state is SlotState.AWAITING_TAKE
            )
            cabinet.take(opened)
            result = await asyncio.wait_for(eject, WAIT_S + SETTLE_S)
            assert result.outcome is EjectOutcome.TAKEN

            cabinet.insert_bank(empty, charge=90)
            returned = await sink.wait_for(BankReturned)
            assert returned.slot == empty
            assert returned.identified
