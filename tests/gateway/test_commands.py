"""The command runner's order records around an eject."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from cloud_link import AcceptedCommand, EjectCommand
from cloud_link.messages import CommandStatus
from firmware_bridge import EjectResult, SlotDriver
from gateway.commands import CommandRunner
from gateway.store import GatewayStore
from protocol.cabinet import EjectOutcome, EjectRejectReason


class OneStepBridge:
    """A bridge whose every eject ends in its first step, as a rejection before any bus work
    does. It notes whether the order row existed when the eject started."""

    def __init__(self, store: GatewayStore, outcome: EjectOutcome) -> None:
        self.store = store
        self.outcome = outcome
        self.order_at_start: list[bool] = []

    async def eject(self, slot: int | None, token: int, *, deadline: float) -> EjectResult:
        self.order_at_start.append(self.store.find_order("order-1") is not None)
        rejected = self.outcome is EjectOutcome.REJECTED
        return EjectResult(
            token=token,
            slot=slot,
            outcome=self.outcome,
            reject_reason=EjectRejectReason.SLOT_EMPTY if rejected else None,
            bank_id=None if rejected else "00000000AABBCCDD",
        )


def accepted(slot: int) -> AcceptedCommand:
    now = time.monotonic()
    return AcceptedCommand(
        command_id="cmd-1",
        command=EjectCommand(slot=slot, order_id="order-1"),
        key_id="k",
        received_monotonic=now,
        deadline_monotonic=now + 30.0,
        unlock_token=7,
    )


async def test_order_row_follows_first_eject_step(tmp_path: Path) -> None:
    """The order row waits for the eject's first step, in which an UNLOCK on a free bus goes
    out, and an eject that ends in that step still finds its outcome recorded."""
    for outcome, status in (
        (EjectOutcome.REJECTED, CommandStatus.REJECTED),
        (EjectOutcome.TAKEN, CommandStatus.SUCCEEDED),
    ):
        store = GatewayStore(tmp_path / f"{outcome.value}.sqlite")
        bridge = OneStepBridge(store, outcome)
        runner = CommandRunner(cast(SlotDriver, bridge), store)

        result = await runner.handle(accepted(slot=3))

        order = store.find_order("order-1")
        assert bridge.order_at_start == [False]
        assert result.status is status
        assert order is not None
        assert order.outcome == outcome.value
        assert [step for _, step, _ in order.steps] == ["received", outcome.value]
