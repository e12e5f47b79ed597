"""The whole daemon end to end: real Mosquitto, simulator on a real pseudo-terminal, signed commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cabinet_sim import NoticeKind, SimConfig
from cabinet_sim.notices import Notice
from cloud_link.commands import EjectCommand
from tests.gateway.rig import WAIT_S, Rig, running_rig
from tests.support.mosquitto import MosquittoBroker, mosquitto, mosquitto_factory  # noqa: F401


def rentable_slots(rig: Rig) -> list[int]:
    assert rig.daemon is not None
    return [slot.slot for slot in rig.daemon.bridge.snapshot().slots if slot.rentable]


def empty_slots(rig: Rig) -> list[int]:
    return rig.sim.cabinet.free_slots()


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Wait for a condition that changes with the daemon's polling; checks every 50 ms."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def on_window_open(rig: Rig, action: Callable[[int], None]) -> Callable[[], None]:
    """Run `action(cabinet_slot)` each time a take window opens in the simulator."""
    cabinet = rig.sim.cabinet

    def listener(notice: Notice) -> None:
        if notice.kind is NoticeKind.WINDOW_OPENED:
            slot = cabinet.cabinet_slot(notice.board, notice.slot)
            asyncio.get_running_loop().call_soon(action, slot)

    return cabinet.subscribe(listener)


async def rentable(rig: Rig) -> int:
    await wait_until(lambda: bool(rentable_slots(rig)))
    return rentable_slots(rig)[0]


async def test_rent_taken(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = await rentable(rig)
        bank_id = rig.daemon.bridge.snapshot().slots[slot - 1].bank_id  # type: ignore[union-attr]
        on_window_open(rig, rig.sim.cabinet.take)

        command_id = await rig.cloud.send(EjectCommand(slot=slot, order_id="order-taken"))
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        outcome = await rig.inbox.wait_for("eject_outcome", lambda e: e.command_id == command_id)

        assert result.status == "succeeded"
        assert result.eject.outcome == "taken"
        assert result.eject.bank_id == bank_id
        assert outcome.order_id == "order-taken"
        assert outcome.report.slot == slot
        assert rig.sim.cabinet.slot(slot).bank is None


async def test_rent_not_taken(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = await rentable(rig)
        command_id = await rig.cloud.send(EjectCommand(slot=slot))
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)

        assert result.status == "failed"
        assert result.eject.outcome == "not_taken"
        assert rig.sim.cabinet.slot(slot).bank is not None


async def test_duplicate_rent_acts_once(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = await rentable(rig)
        openings: list[int] = []
        on_window_open(rig, openings.append)
        on_window_open(rig, rig.sim.cabinet.take)

        command = EjectCommand(slot=slot)
        command_id = await rig.cloud.send(command, command_id="cmd-dup-1")
        await rig.cloud.send(command, command_id="cmd-dup-1")
        await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        await rig.cloud.send(command, command_id="cmd-dup-1")
        await wait_until(
            lambda: (
                len([r for r in rig.inbox.of_kind("command_result") if r.command_id == command_id])
                >= 2
            )
        )

        results = [r for r in rig.inbox.of_kind("command_result") if r.command_id == command_id]
        assert openings == [slot]
        assert {r.eject.outcome for r in results} == {"taken"}
        assert len(rig.inbox.of_kind("eject_outcome")) == 1


async def test_stale_rent_rejected(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        await rentable(rig)
        openings: list[int] = []
        on_window_open(rig, openings.append)

        command_id = await rig.cloud.send(EjectCommand(), lifetime_s=-30.0)
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)

        assert result.status == "rejected"
        assert result.reject_reason == "expired"
        assert openings == []


async def test_return_online(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = empty_slots(rig)[0]
        bank = rig.sim.cabinet.insert_bank(slot, charge=30.0)
        event = await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)

        assert event.recognised is True
        assert event.bank_id == bank.bank_id.hex().upper()
        assert len(rig.inbox.of_kind("bank_returned")) == 1


async def test_unidentified_return(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = empty_slots(rig)[0]
        rig.sim.cabinet.insert_bank(slot, backwards=True)
        event = await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)

        assert event.recognised is False
        assert event.bank_id is None
        assert "unreadable" in event.problem


async def test_returns_while_broker_down_arrive_in_order(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        await rig.inbox.wait_for("birth")
        mosquitto.stop()
        await wait_until(lambda: rig.daemon is not None and not rig.daemon.cloud.connected)
        slots = empty_slots(rig)[:3]
        for slot in slots:
            rig.sim.cabinet.insert_bank(slot)
            await wait_until(
                lambda: (
                    rig.daemon is not None
                    and rig.daemon.cloud.outbox.stats().pending > 0
                    and any(
                        e.kind == "bank_returned" and e.slot == slot
                        for e in rig.daemon.feed.recent(100)
                    )
                )
            )
        mosquitto.start()
        for slot in slots:
            await rig.inbox.wait_for("bank_returned", lambda e, s=slot: e.slot == s, timeout=40)

        returns = [m for m in rig.inbox.messages if m.data.kind == "bank_returned"]
        assert [m.data.slot for m in returns] == slots
        assert all(m.offline for m in returns)
        seqs = [m.seq for m in returns]
        assert seqs == sorted(seqs)


async def test_board_offline_other_serves(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        await wait_until(lambda: bool(rentable_slots(rig)))
        sim = rig.sim.cabinet
        first_board = sim.options.config.board_addresses[0] if hasattr(sim, "options") else 1
        sim.set_board_silent(first_board)
        fault = await rig.inbox.wait_for(
            "fault", lambda f: f.fault == "board_offline" and not f.cleared
        )
        assert fault.board == first_board

        other = [s for s in rentable_slots(rig) if sim.locate(s).board != first_board]
        if not other:
            pytest.skip("seed left no rentable bank on the second board")
        on_window_open(rig, sim.take)
        command_id = await rig.cloud.send(EjectCommand(slot=other[0]))
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        assert result.eject.outcome == "taken"


async def test_restart_mid_eject_acts_once(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = await rentable(rig)
        openings: list[int] = []
        opened = asyncio.Event()

        def record(cabinet_slot: int) -> None:
            openings.append(cabinet_slot)
            opened.set()

        on_window_open(rig, record)
        command_id = await rig.cloud.send(EjectCommand(slot=slot), lifetime_s=120)
        await asyncio.wait_for(opened.wait(), WAIT_S)
        await rig.crash_daemon()
        rig.sim.cabinet.take(slot)
        await rig.start_daemon()

        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        await asyncio.sleep(0)  # let any second result that was queued arrive first
        results = [r for r in rig.inbox.of_kind("command_result") if r.command_id == command_id]
        assert openings == [slot]
        assert len(results) == 1
        assert result.eject.outcome == "taken"


def _all_results(rig: Rig) -> list[Any]:
    return rig.inbox.of_kind("command_result")


@pytest.fixture
def small_cabinet() -> SimConfig:
    return SimConfig(boards=2, slots_per_board=4, seed=7)
