"""The daemon end to end over the field protocols: GZXJ station and S1TT slot boards.

The native slot bus is covered by test_e2e.py; these run the same flows with the simulator
and the daemon set to another wire protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cabinet_sim import SimConfig
from cloud_link.commands import EjectCommand
from tests.gateway.rig import Rig, running_rig
from tests.gateway.test_e2e import on_window_open, rentable, wait_until
from tests.support.mosquitto import MosquittoBroker

PROTOCOLS = ["gzxj", "s1tt"]


@contextlib.asynccontextmanager
async def protocol_rig(
    broker: MosquittoBroker, tmp_path: Path, protocol: str
) -> AsyncIterator[Rig]:
    # S1TT boards count from address 0, which BoardSpec does not accept, so they get 1 and 2.
    boards = (1, 2) if protocol == "s1tt" else 2
    sim = SimConfig.model_validate(
        {"boards": boards, "slots_per_board": 4, "seed": 7, "protocol": protocol}
    )
    async with running_rig(broker, tmp_path, sim_config=sim, protocol=protocol) as rig:
        yield rig


def bank_text(protocol: str, bank_id: bytes) -> str:
    """Return the bank id as the protocol carries it: S1TT serials are the last 5 bytes."""
    return (bank_id[-5:] if protocol == "s1tt" else bank_id).hex().upper()


def empty_slot(rig: Rig) -> int:
    """Return a slot that the simulator and the daemon both see as empty."""
    assert rig.daemon is not None
    snapshot = rig.daemon.bridge.snapshot()
    free = rig.sim.cabinet.free_slots()
    return next(slot for slot in free if snapshot.slots[slot - 1].state == "empty")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_rent_taken(mosquitto: MosquittoBroker, tmp_path: Path, protocol: str) -> None:
    async with protocol_rig(mosquitto, tmp_path, protocol) as rig:
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
    async with protocol_rig(mosquitto, tmp_path, protocol) as rig:
        await wait_until(rig, lambda: bool(rig.sim.cabinet.free_slots()))
        slot = empty_slot(rig)
        bank = rig.sim.cabinet.insert_bank(slot, charge=30.0)
        event = await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)

        assert event.recognised is True
        assert event.bank_id == bank_text(protocol, bank.bank_id)
        assert len(rig.inbox.of_kind("bank_returned")) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unidentified_return(
    mosquitto: MosquittoBroker, tmp_path: Path, protocol: str
) -> None:
    async with protocol_rig(mosquitto, tmp_path, protocol) as rig:
        slot = empty_slot(rig)
        rig.sim.cabinet.insert_bank(slot, readable=False)
        event = await rig.inbox.wait_for("bank_returned", lambda e: e.slot == slot)

        assert event.recognised is False
        assert event.bank_id is None
        assert "unreadable" in event.problem
