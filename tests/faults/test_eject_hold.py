"""Eject holds on the slot bus under a flood of signed duplicate eject commands."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from cabinet_sim import NoticeKind
from cabinet_sim.notices import Notice
from cloud_link.commands import EjectCommand
from tests.gateway.rig import Rig, running_rig
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

RETURN_REPORTED_WITHIN_S = 5.0
"""Polls run every second in the rig, so a return waits for one poll, its read and its report."""

FLOOD_SENDERS = 1


async def flood_duplicates(rig: Rig, command_id: str, slot: int, sent: list[int]) -> None:
    """Resend one signed eject command as fast as the broker acknowledges it."""
    while True:
        await rig.cloud.send(EjectCommand(slot=slot), command_id=command_id)
        sent[0] += 1


def window_openings(rig: Rig) -> list[int]:
    """Return a list that gets the cabinet slot of every take window that opens."""
    opened: list[int] = []
    cabinet = rig.sim.cabinet

    def listener(notice: Notice) -> None:
        if notice.kind is NoticeKind.WINDOW_OPENED:
            opened.append(cabinet.cabinet_slot(notice.board, notice.slot))

    cabinet.subscribe(listener)
    return opened


async def test_duplicate_flood_keeps_returns_and_ejects(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        daemon = rig.daemon
        assert daemon is not None
        empty = rig.sim.cabinet.free_slots()
        assert len(empty) >= 2
        rentable = [s.slot for s in daemon.bridge.snapshot().slots if s.rentable]
        assert len(rentable) >= 2
        opened = window_openings(rig)

        # A command rejected once (empty slot) comes back as a stored duplicate every time.
        flooded_id = await rig.cloud.send(EjectCommand(slot=empty[-1]))
        await rig.inbox.wait_for("command_result", lambda r: r.command_id == flooded_id)
        sent = [0]
        flood = [
            asyncio.create_task(flood_duplicates(rig, flooded_id, empty[-1], sent))
            for _ in range(FLOOD_SENDERS)
        ]
        try:
            # Returns during the flood are still reported promptly.
            for slot in empty[:2]:
                rig.sim.cabinet.insert_bank(slot)
                await rig.inbox.wait_for(
                    "bank_returned", lambda e, slot=slot: e.slot == slot, RETURN_REPORTED_WITHIN_S
                )

            # Two users rent at once during the flood: each eject gets one definite result.
            first, second = rentable[:2]
            ids = await asyncio.gather(
                rig.cloud.send(EjectCommand(slot=first)),
                rig.cloud.send(EjectCommand(slot=second)),
            )
            results = [
                await rig.inbox.wait_for("command_result", lambda r, i=i: r.command_id == i)
                for i in ids
            ]
        finally:
            for task in flood:
                task.cancel()
            for task in flood:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        assert sent[0] > 50, "the flood was too thin to test anything"
        assert daemon.bridge._core.bus._next_hold_at > 0, "no hold ran out unused"
        assert [r.eject.outcome for r in results] == ["not_taken", "not_taken"]
        assert sorted(opened) == sorted([first, second])
        flooded = [r for r in rig.inbox.of_kind("command_result") if r.command_id == flooded_id]
        assert {r.status for r in flooded} == {"rejected"}
