"""The daemon end to end over the field protocols: rent and return through a GZXJ station.

The native slot bus is covered by test_e2e.py; these run the same flows with the simulator
and the daemon set to another wire protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_link.commands import EjectCommand
from tests.gateway.rig import Rig, running_rig
from tests.gateway.test_e2e import on_window_open, rentable, wait_until
from tests.support.mosquitto import MosquittoBroker

PROTOCOLS = ["gzxj"]


def empty_slot(rig: Rig) -> int:
    """Return a slot that the simulator and the daemon both see as empty."""
    assert rig.daemon is not None
    snapshot = rig.daemon.bridge.snapshot()
    free = rig.sim.cabinet.free_slots()
    return next(slot for slot in free if snapshot.slots[slot - 1].state == "empty")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_rent_taken(mosquitto: MosquittoBroker, tmp_path: Path, protocol: str) -> None:
    async with running_rig(mosquitto, tmp_path, protocol=protocol) as rig:
        slot = await rentable(rig)
        bank_id = rig.daemon.bridge.snapshot().slots[slot - 1].bank_id  # type: ignore[union-attr]
        cabinet = rig.sim.cabinet

        def take(opened: int) -> None:
            cabinet.take(opened)

        on_window_open(rig, take)

        command_id = await rig.cloud.send(EjectCommand(slot=slot, order_id="order-taken"))
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        outcome = await rig.inbox.wait_for("eject_outcome", lambda e: e.command_id == command_id)

        assert result.status == "succeeded"
        assert result.eject.outcome == "taken"
        assert result.eject.bank_id == bank_id
        assert outcome.report.slot == slot
        assert rig.sim.cabinet.slot(slot).bank is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_return(mosquitto: MosquittoBroker, tmp_path: Path, protocol: str) -> None:
    async with running_rig(mosquitto, tmp_path, protocol=protocol) as rig:
        await wait_until(rig, lambda: bool(rig.sim.cabinet.free_slots()))
        slot = empty_slot(rig)
        bank = rig.sim.cabinet.insert_bank(slot, charge=30.0)
        event = await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)

        assert event.recognised is True
        assert event.bank_id == bank.bank_id.hex().upper()
        assert len(rig.inbox.of_kind("bank_returned")) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unidentified_return(
    mosquitto: MosquittoBroker, tmp_path: Path, protocol: str
) -> None:
    async with running_rig(mosquitto, tmp_path, protocol=protocol) as rig:
        slot = empty_slot(rig)
        rig.sim.cabinet.insert_bank(slot, readable=False)
        event = await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)

        assert event.recognised is False
        assert event.bank_id is None
        assert "unreadable" in event.problem
