"""The GZXJ driver against the simulator's station, over the in-memory line and a pty."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cabinet_sim import Cabinet, MonotonicClock, SimConfig
from cabinet_sim.config import BankMix, GzxjConfig
from cabinet_sim.gzxj_station import GzxjStation
from cabinet_sim.transports import MemoryLink, PtyTransport
from firmware_bridge import (
    BankRemoved,
    BankReturned,
    BridgeConfig,
    ByteLink,
    CabinetEvent,
    EjectFinished,
    FaultRaised,
    MemoryStore,
    SlotDriver,
    SlotStateChanged,
    create_bridge,
)
from firmware_bridge.drivers.gzxj import GzxjDriver
from firmware_bridge.drivers.gzxj_line import RENT_TIMEOUT_S
from protocol.cabinet import EjectFailReason, EjectOutcome, FaultKind, LinkState, SlotState
from protocol.gzxj import Deframer
from tests.firmware_bridge.conftest import WAIT_S, RecordingSink, bridge_config, memory_opener

SETTLE_S = 3.0
"""The station shows the old bank for 3 s after an opening, so the driver waits that long."""


def gzxj_sim(**changes: Any) -> SimConfig:
    """One station of 2 x 4 slots, full of rentable banks; the lock returns after 2 s."""
    values: dict[str, Any] = {
        "protocol": "gzxj",
        "boards": 2,
        "slots_per_board": 4,
        "pacing": False,
        "banks": BankMix(fill_ratio=1.0, rentable_share=1.0),
        "gzxj": GzxjConfig(take_window_s=2, return_repeat_s=0.3),
    }
    values.update(changes)
    return SimConfig(**values)


class StoringSink(RecordingSink):
    """Saves the driver's occupancy with every event, as the daemon does."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self.store = store
        self.driver: SlotDriver | None = None

    async def handle(self, event: CabinetEvent) -> None:
        await super().handle(event)
        if self.driver is not None:
            self.store.occupancy = self.driver.occupancy()


class SwallowingLink:
    """Drops written frames of chosen command words, as if they were lost on the line."""

    def __init__(self, inner: ByteLink) -> None:
        self.inner = inner
        self.swallow: dict[str, int] = {}  # command word -> frames still to drop
        self.written: list[str] = []

    @property
    def description(self) -> str:
        return self.inner.description

    async def read(self) -> bytes:
        return await self.inner.read()

    async def write(self, data: bytes) -> None:
        for frame in Deframer().feed(data):
            self.written.append(frame.command)
            if self.swallow.get(frame.command, 0) > 0:
                self.swallow[frame.command] -= 1
                return
        await self.inner.write(data)

    def close(self) -> None:
        self.inner.close()


@dataclass
class GzxjRig:
    cabinet: Cabinet
    driver: GzxjDriver
    sink: StoringSink
    store: MemoryStore
    link: SwallowingLink | None = None

    @property
    def station(self) -> GzxjStation:
        station = self.cabinet.emulation
        assert isinstance(station, GzxjStation)
        return station

    def state(self, slot: int) -> SlotState:
        return self.driver.snapshot().slots[slot - 1].state


def driver_config(port: str, sim: SimConfig, **overrides: Any) -> BridgeConfig:
    values: dict[str, Any] = {"protocol": "gzxj", "settle_s": SETTLE_S}
    values.update(overrides)
    return bridge_config(port, sim, **values)


@contextlib.asynccontextmanager
async def driven(driver: SlotDriver) -> AsyncIterator[None]:
    task = asyncio.create_task(driver.run(), name="gzxj-driver-under-test")
    try:
        await driver.wait_ready(WAIT_S)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def gzxj_rig(
    cabinet: Cabinet | None = None, store: MemoryStore | None = None, **config: Any
) -> AsyncIterator[GzxjRig]:
    cabinet = cabinet or Cabinet(gzxj_sim(), clock=MonotonicClock())
    store = store or MemoryStore()
    sink = StoringSink(store)
    rig_link: list[SwallowingLink] = []

    def wrap(inner: ByteLink) -> ByteLink:
        rig_link.append(SwallowingLink(inner))
        return rig_link[-1]

    async with MemoryLink(cabinet) as line:
        settings = driver_config("memory", cabinet.config, **config)
        driver = create_bridge(settings, sink, store, opener=memory_opener(line, wrap))
        assert isinstance(driver, GzxjDriver)
        sink.driver = driver
        async with driven(driver):
            yield GzxjRig(cabinet, driver, sink, store, rig_link[-1])


async def until(condition: Callable[[], bool], within: float = WAIT_S) -> None:
    """Wait for a change inside the simulator, which emits no event the test could await."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (the station's state has no notification)
            await asyncio.sleep(0.02)


async def wait_state(rig: GzxjRig, slot: int, state: SlotState) -> None:
    await rig.sink.wait_until(lambda: rig.state(slot) is state)


async def test_factory_native_is_bridge() -> None:
    from firmware_bridge import Bridge

    sim = gzxj_sim(protocol="native")
    settings = bridge_config("memory", sim)
    assert type(create_bridge(settings, RecordingSink(), MemoryStore())) is Bridge


async def test_rent_taken() -> None:
    async with gzxj_rig() as rig:
        assert rig.state(3) in (SlotState.READY, SlotState.CHARGING)
        bank_id = rig.driver.snapshot().slots[2].bank_id
        eject = asyncio.create_task(rig.driver.eject(3, token=0x1001))
        await wait_state(rig, 3, SlotState.AWAITING_TAKE)
        rig.cabinet.take(3)
        result = await asyncio.wait_for(eject, WAIT_S + SETTLE_S)

        assert result.outcome is EjectOutcome.TAKEN
        assert result.bank_id == bank_id
        await until(lambda: rig.station.orders[0x1001].confirmed)  # BR arrived
        await wait_state(rig, 3, SlotState.EMPTY)
        assert rig.sink.of(BankRemoved) == []
        assert [e.result for e in rig.sink.of(EjectFinished)] == [result]
        stats = rig.driver.stats()
        assert stats.frames_sent > 0
        assert stats.frames_received > 0
        assert stats.crc_errors == 0


async def test_rent_not_taken() -> None:
    async with gzxj_rig() as rig:
        result = await asyncio.wait_for(rig.driver.eject(2, token=0x1002), WAIT_S + SETTLE_S)

        assert result.outcome is EjectOutcome.NOT_TAKEN
        assert rig.state(2) in (SlotState.READY, SlotState.CHARGING)
        assert [e for e in rig.sink.of(FaultRaised) if e.slot != 0] == []
        assert rig.sink.of(BankRemoved) == []


async def test_repeated_token_not_rented_again() -> None:
    async with gzxj_rig() as rig:
        first = await asyncio.wait_for(rig.driver.eject(1, token=0x1003), WAIT_S + SETTLE_S)
        again = await rig.driver.eject(1, token=0x1003)

        assert again == first
        assert rig.link is not None
        assert rig.link.written.count("FB") == 1


async def test_lost_rent_reply_repeats_order_id() -> None:
    # The station keeps the slot open for longer than the driver waits for the lost reply.
    sim = gzxj_sim(gzxj=GzxjConfig(take_window_s=30))
    async with gzxj_rig(Cabinet(sim, clock=MonotonicClock())) as rig:
        assert rig.link is not None
        rig.link.swallow["FB"] = 0
        original_read = rig.link.inner.read
        dropped: list[bytes] = []

        async def read_dropping_first_reply() -> bytes:
            data = await original_read()
            if b"@FB," in data and not dropped:
                dropped.append(data)
                return await original_read()
            return data

        rig.link.read = read_dropping_first_reply  # type: ignore[method-assign]
        eject = asyncio.create_task(rig.driver.eject(4, token=0x1004))
        await rig.sink.wait_until(
            lambda: rig.state(4) is SlotState.AWAITING_TAKE, within=RENT_TIMEOUT_S + WAIT_S
        )
        rig.cabinet.take(4)
        result = await asyncio.wait_for(eject, 2 * WAIT_S + SETTLE_S)

        assert result.outcome is EjectOutcome.TAKEN
        assert rig.link.written.count("FB") == 2
        assert rig.station.stats.cached_replies == 1


async def test_return_identified_once() -> None:
    sim = gzxj_sim(banks=BankMix(fill_ratio=0.0))
    async with gzxj_rig(Cabinet(sim, clock=MonotonicClock())) as rig:
        assert rig.link is not None
        rig.link.swallow["RS"] = 1  # the first confirmation is lost; the station repeats RS
        bank = rig.cabinet.insert_bank(5, charge=95)
        returned = await rig.sink.wait_for(BankReturned)
        await until(lambda: 5 in rig.station.confirmed)

        assert returned.slot == 5
        assert returned.bank_id == bank.bank_id.hex().upper()
        assert returned.identified
        assert rig.link.written.count("RS") == 2
        assert len(rig.sink.of(BankReturned)) == 1
        await rig.sink.wait_until(lambda: rig.driver.snapshot().slots[4].rentable)


async def test_return_unidentified() -> None:
    sim = gzxj_sim(banks=BankMix(fill_ratio=0.0))
    async with gzxj_rig(Cabinet(sim, clock=MonotonicClock())) as rig:
        rig.cabinet.insert_bank(6, readable=False)
        returned = await rig.sink.wait_for(BankReturned)
        fault = await rig.sink.wait_for(FaultRaised, lambda e: e.slot == 6)

        assert returned.slot == 6
        assert not returned.identified
        assert returned.bank_id is None
        assert fault.kind is FaultKind.ID_READ_FAILED
        await until(lambda: 6 in rig.station.confirmed)
        assert len(rig.sink.of(BankReturned)) == 1


async def test_tamper_reported() -> None:
    async with gzxj_rig() as rig:
        bank_id = rig.driver.snapshot().slots[0].bank_id
        rig.cabinet.tamper(1)
        fault = await rig.sink.wait_for(FaultRaised, lambda e: e.kind is FaultKind.TAMPER)
        removed = await rig.sink.wait_for(BankRemoved, within=WAIT_S + SETTLE_S)

        assert fault.slot == 1
        assert removed.slot == 1
        assert removed.bank_id == bank_id
        assert rig.state(1) is SlotState.FAULTED


async def test_station_offline_and_back() -> None:
    async with gzxj_rig(status_interval_s=0.2) as rig:
        rig.cabinet.set_board_silent("0", True)
        await rig.sink.wait_until(
            lambda: rig.driver.snapshot().boards[0].link is LinkState.OFFLINE, within=2 * WAIT_S
        )
        result = await rig.driver.eject(1, token=0x1005)

        assert result.outcome is EjectOutcome.FAILED
        assert result.fail_reason is EjectFailReason.BOARD_OFFLINE
        assert not result.uncertain
        cabinet_states = [e.state for e in rig.sink.of(SlotStateChanged) if e.slot == 0]
        assert cabinet_states[-1] is SlotState.FAULTED
        rig.cabinet.set_board_silent("0", False)
        await rig.sink.wait_until(
            lambda: rig.driver.snapshot().boards[0].link is LinkState.ONLINE, within=WAIT_S
        )


async def test_restart_no_duplicates() -> None:
    cabinet = Cabinet(gzxj_sim(banks=BankMix(fill_ratio=0.0)), clock=MonotonicClock())
    store = MemoryStore()
    async with gzxj_rig(cabinet, store) as rig:
        assert rig.link is not None
        rig.link.swallow["RS"] = 1000  # the gateway stops before it confirms the return
        rig.cabinet.insert_bank(2, charge=95)
        await rig.sink.wait_for(BankReturned)
    assert store.occupancy[2][0]

    async with gzxj_rig(cabinet, store) as rig:
        await until(lambda: 2 in rig.station.confirmed)

        assert rig.sink.of(BankReturned) == []
        eject = asyncio.create_task(rig.driver.eject(2, token=0x2001))
        await wait_state(rig, 2, SlotState.AWAITING_TAKE)
        rig.cabinet.take(2)
        taken = await asyncio.wait_for(eject, WAIT_S + SETTLE_S)
        assert taken.outcome is EjectOutcome.TAKEN

    async with gzxj_rig(cabinet, store) as rig:
        resolved = await asyncio.wait_for(
            rig.driver.resolve_eject(2, 0x2001, deadline=None), WAIT_S + SETTLE_S
        )

        assert resolved.outcome is EjectOutcome.TAKEN
        assert rig.station.stats.cached_replies == 1
        assert rig.sink.of(BankRemoved) == []
        assert rig.sink.of(BankReturned) == []


async def test_pty_rent_and_return(tmp_path: Path) -> None:
    sim = gzxj_sim(pacing=True, banks=BankMix(fill_ratio=0.5, rentable_share=1.0), seed=3)
    cabinet = Cabinet(sim, clock=MonotonicClock())
    store = MemoryStore()
    sink = StoringSink(store)
    async with PtyTransport(cabinet, link_path=tmp_path / "ttyGZXJ") as pty:
        settings = driver_config(pty.device_path, sim)
        driver = create_bridge(settings, sink, store)
        sink.driver = driver
        async with driven(driver):
            full = next(s.slot for s in driver.snapshot().slots if s.rentable)
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
            assert full >= 1

            cabinet.insert_bank(empty, charge=90)
            returned = await sink.wait_for(BankReturned)
            assert returned.slot == empty
            assert returned.identified


async def test_port_lost_and_reopened() -> None:
    async with gzxj_rig() as rig:
        rig.cabinet.port_down()
        lost = await rig.sink.wait_for(FaultRaised, lambda e: e.kind is FaultKind.SERIAL_PORT_LOST)
        await rig.sink.wait_until(lambda: rig.driver.snapshot().boards[0].link is LinkState.OFFLINE)
        rig.cabinet.port_up()
        await rig.sink.wait_until(lambda: rig.driver.snapshot().boards[0].link is LinkState.ONLINE)

        assert lost.board is None
        assert rig.driver.snapshot().port_open
