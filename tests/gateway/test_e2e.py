"""The daemon end to end: real Mosquitto, the simulator on a real pty, signed commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cabinet_sim import NoticeKind
from cabinet_sim.notices import Notice
from cloud_link.commands import EjectCommand
from gateway.cli import app
from gateway.daemon import Daemon
from protocol.cabinet import LinkState
from tests.gateway.rig import WAIT_S, Rig, running_rig
from tests.support.mosquitto import BrokerFactory, MosquittoBroker


def rentable_slots(rig: Rig) -> list[int]:
    assert rig.daemon is not None
    return [slot.slot for slot in rig.daemon.bridge.snapshot().slots if slot.rentable]


def returned_in(daemon: Daemon, slot: int) -> bool:
    return any(e.kind == "bank_returned" and e.slot == slot for e in daemon.feed.recent(100))


def empty_slots(rig: Rig) -> list[int]:
    return rig.sim.cabinet.free_slots()


async def wait_until(rig: Rig, predicate: Callable[[], bool], within_s: float = WAIT_S) -> None:
    """Wait for a condition on the daemon's state; it is checked after every daemon event."""
    assert rig.daemon is not None
    async with asyncio.timeout(within_s):
        await rig.daemon.feed.wait_for(predicate)


def on_window_open(rig: Rig, action: Callable[[int], None]) -> Callable[[], None]:
    """Run `action(cabinet_slot)` each time a take window opens in the simulator."""
    cabinet = rig.sim.cabinet

    def listener(notice: Notice) -> None:
        if notice.kind is NoticeKind.WINDOW_OPENED:
            slot = cabinet.cabinet_slot(notice.board, notice.slot)
            asyncio.get_running_loop().call_soon(action, slot)

    return cabinet.subscribe(listener)


async def rentable(rig: Rig) -> int:
    await wait_until(rig, lambda: bool(rentable_slots(rig)))
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
        # The redelivery after the result gets the stored result again, never a new eject.
        results = await rig.inbox.wait_count(
            "command_result", 2, lambda r: r.command_id == command_id
        )

        assert openings == [slot]
        assert {r.eject.outcome for r in results} == {"taken"}
        assert len(rig.inbox.of_kind("eject_outcome")) == 1


async def test_stale_rent_rejected(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        await rentable(rig)
        openings: list[int] = []
        on_window_open(rig, openings.append)

        issued = datetime.now(UTC) - timedelta(seconds=120)
        command_id = await rig.cloud.send(EjectCommand(), lifetime_s=60.0, issued_at=issued)
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
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    # Persistence keeps the watching cloud's session across the broker restart.
    mosquitto = mosquitto_factory(persistence=True)
    async with running_rig(mosquitto, tmp_path) as rig:
        await rig.inbox.wait_for("birth")
        daemon = rig.daemon
        assert daemon is not None
        mosquitto.stop()
        async with asyncio.timeout(WAIT_S):
            await daemon.cloud.wait_until(lambda stats: stats.link is LinkState.OFFLINE)
        slots = empty_slots(rig)[:3]
        for slot in slots:
            rig.sim.cabinet.insert_bank(slot)
            await wait_until(rig, lambda slot=slot: returned_in(daemon, slot))
        assert daemon.cloud.outbox.stats().pending >= len(slots)

        mosquitto.start()
        await rig.inbox.wait_count("bank_returned", len(slots), within_s=40)

        returns = [m for m in rig.inbox.messages if m.data.kind == "bank_returned"]
        assert [m.data.slot for m in returns] == slots
        assert all(m.offline for m in returns)
        seqs = [m.seq for m in returns]
        assert seqs == sorted(seqs)


async def test_board_offline_other_serves(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        await wait_until(rig, lambda: bool(rentable_slots(rig)))
        sim = rig.sim.cabinet
        first_board = sim.config.board_addresses()[0]
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


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("en", ["Cabinet", "online"]), ("zh-CN", ["机柜", "在线"])],
)
async def test_cli_against_running_daemon(
    mosquitto: MosquittoBroker, tmp_path: Path, lang: str, expected: list[str]
) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = empty_slots(rig)[0]
        rig.sim.cabinet.insert_bank(slot)
        await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)
        socket = str(rig.state_dir / "control.sock")
        runner = CliRunner()

        def cli(*args: str) -> Result:
            return runner.invoke(app, [*args, "--socket", socket, "--lang", lang])

        status = await asyncio.to_thread(cli, "status")
        slots = await asyncio.to_thread(cli, "slots", "--json")
        events = await asyncio.to_thread(cli, "events", "--limit", "50")

        assert status.exit_code == 0, status.output
        for word in expected:
            assert word in status.output
        assert slots.exit_code == 0, slots.output
        rows = json.loads(slots.output)["slots"]
        assert [row["slot"] for row in rows] == list(range(1, len(rows) + 1))
        assert events.exit_code == 0, events.output
        assert str(slot) in events.output


async def test_cli_reports_daemon_not_running(tmp_path: Path) -> None:
    runner = CliRunner()
    socket = str(tmp_path / "absent.sock")
    english = runner.invoke(app, ["status", "--socket", socket, "--lang", "en"])
    chinese = runner.invoke(app, ["status", "--socket", socket, "--lang", "zh-CN"])
    assert english.exit_code == 3
    assert "not running" in english.output
    assert chinese.exit_code == 3
    assert "未运行" in chinese.output
