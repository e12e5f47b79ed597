"""Property test of the outbox bounds under random mixes of lanes, sizes and acknowledgements."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cloud_link import (
    BatteryHealth,
    CommandResult,
    CommandStatus,
    FaultEvent,
    OutboxFullError,
    OutboxLimits,
    StateChange,
)
from cloud_link.clock import ManualClock
from cloud_link.messages import AnyMessageData, Lane
from cloud_link.outbox import Outbox
from cloud_link.storage import Storage
from protocol.cabinet import FaultKind, SlotState

MAX_BYTES = 6000
TELEMETRY_SHARE = 0.3


def message(kind: str, slot: int, detail_length: int) -> AnyMessageData:
    if kind == "state":
        return StateChange(slot=slot, state=SlotState.CHARGING)
    if kind == "battery":
        return BatteryHealth(slot=slot, bank_id="00AABBCC", soh_percent=90)
    if kind == "fault":
        return FaultEvent(fault=FaultKind.OVERHEAT, slot=slot, detail="d" * detail_length)
    return CommandResult(command_id=f"c{slot}", status=CommandStatus.SUCCEEDED)


operations = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["state", "battery", "fault", "result"]),
            st.integers(1, 6),
            st.integers(0, 200),
        ),
        st.just(("ack", 0, 0)),
    ),
    max_size=60,
)


@given(operations)
def test_outbox_invariants(steps: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        storage = Storage(Path(directory) / "db.sqlite")
        limits = OutboxLimits(max_bytes=MAX_BYTES, telemetry_share=TELEMETRY_SHARE)
        outbox = Outbox(storage, cabinet_id="cab", limits=limits, clock=ManualClock())
        kept: set[int] = set()  # non-telemetry rows stored and not yet acknowledged
        last_seq = 0
        for kind, slot, detail_length in steps:
            if kind == "ack":
                for entry in outbox.pending(1):
                    outbox.remove(entry.id)
                    kept.discard(entry.seq)
                continue
            try:
                seq = outbox.enqueue(message(kind, slot, detail_length), topic="t", offline=True)
            except OutboxFullError:
                continue
            assert seq > last_seq
            last_seq = seq
            if kind in ("fault", "result"):
                kept.add(seq)

            pending = outbox.pending(1000)
            telemetry = sum(len(e.payload) for e in pending if e.lane is Lane.TELEMETRY)
            assert telemetry <= MAX_BYTES * TELEMETRY_SHARE
            assert sum(len(e.payload) for e in pending) <= MAX_BYTES
            assert kept <= {e.seq for e in pending if e.lane is not Lane.TELEMETRY}
            assert outbox.stats().pending_bytes == sum(len(e.payload) for e in pending)
        storage.close()
