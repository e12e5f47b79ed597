"""Commands that wait in the broker session while the daemon is down."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_link.commands import EjectCommand
from tests.faults.harness import fault_rig, rentable_slot
from tests.faults.windows import WindowCounter
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults


async def test_queued_eject_runs_after_restart(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: an eject sent while the daemon was down, and still inside its deadline when
    the daemon is back, is executed once (the bank is taken), not failed."""
    async with fault_rig(mosquitto, tmp_path) as rig:
        slot = await rentable_slot(rig)
        windows = WindowCounter(rig.sim.cabinet, take=True)
        await rig.crash_daemon()
        command_id = await rig.cloud.send(EjectCommand(slot=slot), lifetime_s=60)
        await rig.start_daemon()
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        windows.close()

    assert result.eject.fail_reason is None
    assert result.eject.outcome == "taken"
    assert windows.slots == [slot]
