"""The wall clock jumping backward and forward while commands are received and running.

The cloud link takes its clock from `SystemClock.from_settings`; the test replaces that with
a clock whose wall time it can shift. The machine's clock is never touched. Documented rules:
a deadline is judged once, at receipt, against the synchronised wall clock, and is then kept
on the monotonic scale, so a later jump of the wall clock neither expires nor extends it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloud_link.commands import EjectCommand
from cloud_link.config import CommandSettings
from tests.faults.harness import fault_rig, rentable_slot
from tests.faults.windows import WindowCounter
from tests.gateway.test_e2e import on_window_open
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

HOUR_S = 3600.0


class ShiftedWall:
    """Real monotonic time and a wall clock offset by `offset_s`, shared by every instance."""

    offset_s = 0.0

    @classmethod
    def from_settings(cls, settings: CommandSettings) -> ShiftedWall:
        return cls()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time() + ShiftedWall.offset_s

    def wall_synchronised(self) -> bool:
        return True


@pytest.fixture
def shifted_wall(monkeypatch: pytest.MonkeyPatch) -> type[ShiftedWall]:
    ShiftedWall.offset_s = 0.0
    monkeypatch.setattr("cloud_link.session.SystemClock", ShiftedWall)
    return ShiftedWall


@pytest.mark.parametrize(
    ("offset_s", "reason"),
    [(HOUR_S, "expired"), (-HOUR_S, "issued_in_future")],
)
async def test_wall_off_at_receipt(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    shifted_wall: type[ShiftedWall],
    offset_s: float,
    reason: str,
) -> None:
    """Invariant: with the synchronised wall clock an hour ahead a fresh command is expired,
    and an hour behind it is issued in the future. Either way it is rejected and no lock moves."""
    async with fault_rig(mosquitto, tmp_path) as rig:
        slot = await rentable_slot(rig)
        windows = WindowCounter(rig.sim.cabinet)
        shifted_wall.offset_s = offset_s
        command_id = await rig.cloud.send(EjectCommand(slot=slot), lifetime_s=60)
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        windows.close()

    assert result.status == "rejected"
    assert result.reject_reason == reason
    assert windows.total == 0


async def test_wall_jumps_during_eject(
    mosquitto: MosquittoBroker, tmp_path: Path, shifted_wall: type[ShiftedWall]
) -> None:
    """Invariant: a command accepted with a correct wall clock runs to its one final result
    while the wall clock jumps an hour forward and two hours back. It acts exactly once."""
    async with fault_rig(mosquitto, tmp_path) as rig:
        slot = await rentable_slot(rig)
        windows = WindowCounter(rig.sim.cabinet)
        jumps: list[float] = []

        def jump_then_take(notice_slot: int) -> None:
            shifted_wall.offset_s = HOUR_S
            jumps.append(shifted_wall.offset_s)
            shifted_wall.offset_s = -HOUR_S
            jumps.append(shifted_wall.offset_s)
            rig.sim.cabinet.take(notice_slot)

        on_window_open(rig, jump_then_take)
        command_id = await rig.cloud.send(EjectCommand(slot=slot), lifetime_s=20)
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        results = [r for r in rig.inbox.of_kind("command_result") if r.command_id == command_id]
        windows.close()

    assert jumps == [HOUR_S, -HOUR_S]
    assert result.status == "succeeded"
    assert result.eject.outcome == "taken"
    assert len(results) == 1
    assert windows.slots == [slot]
