"""Child process for the sequence tests: runs one delete path on an outbox, then SIGKILLs itself.

Usage: python -m tests.cloud_link.outbox_child DATABASE SCENARIO
It prints `seq N` for every sequence number `enqueue` returned, then `done`, and kills
itself with SIGKILL, so the SQLite file is neither closed nor checkpointed.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cloud_link import (
    Birth,
    CommandResult,
    CommandStatus,
    FaultEvent,
    OutboxLimits,
    SlotSnapshot,
    StateChange,
    StockReport,
)
from cloud_link.clock import ManualClock
from cloud_link.outbox import Outbox
from cloud_link.storage import Storage
from protocol.cabinet import FaultKind, SlotState

# Small enough that a few state changes fill the telemetry share and get evicted, and that
# a 24-slot birth exceeds the message limit.
LIMITS = OutboxLimits(max_bytes=4096, telemetry_share=0.25, max_message_bytes=512)
# A telemetry share smaller than one state change, which is therefore dropped at once.
TINY_TELEMETRY = OutboxLimits(max_bytes=4096, telemetry_share=0.02)


def open_outbox(database: Path, scenario: str) -> Outbox:
    limits = TINY_TELEMETRY if scenario == "dropped" else LIMITS
    return Outbox(Storage(database), cabinet_id="cab-001", limits=limits, clock=ManualClock())


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fault(slot: int) -> FaultEvent:
    return FaultEvent(fault=FaultKind.OVERHEAT, slot=slot)


def enqueue(outbox: Outbox, data: object, topic: str = "t") -> int:
    seq = outbox.enqueue(data, topic=topic, offline=True)  # type: ignore[arg-type]
    report(f"seq {seq}")
    return seq


def remove_one_by_one(outbox: Outbox) -> None:
    for slot in range(1, 6):
        enqueue(outbox, fault(slot))
    for entry in outbox.pending(10):
        outbox.remove(entry.id)


def remove_many(outbox: Outbox) -> None:
    for slot in range(1, 6):
        enqueue(outbox, fault(slot))
    outbox.remove_many([entry.id for entry in outbox.pending(10)])


def remove_newest_only(outbox: Outbox) -> None:
    for slot in range(1, 6):
        enqueue(outbox, fault(slot))
    newest = max(outbox.pending(10), key=lambda entry: entry.seq)
    outbox.remove(newest.id)


def dead_letter_and_prune(outbox: Outbox) -> None:
    for slot in range(1, 4):
        enqueue(outbox, fault(slot))
    for entry in outbox.pending(10):
        outbox.move_to_dead_letters(entry.id, "rejected by broker", 0x87)
    outbox.prune_dead_letters(keep=0)


def coalesce(outbox: Outbox) -> None:
    for rentable in range(3):
        enqueue(outbox, StockReport(rentable=rentable, charging=0, empty=1, faulted=0))


def coalesce_then_remove(outbox: Outbox) -> None:
    coalesce(outbox)
    for entry in outbox.pending(10):
        outbox.remove(entry.id)


def evict(outbox: Outbox) -> None:
    for slot in range(1, 21):
        enqueue(outbox, StateChange(slot=slot, state=SlotState.CHARGING))
    # Only the newest rows are left, and the high-water mark must cover them once removed.
    outbox.remove_many([entry.id for entry in outbox.pending(100)])


def too_large_then_prune(outbox: Outbox) -> None:
    enqueue(outbox, fault(1))
    slots = tuple(SlotSnapshot(slot=n, state=SlotState.EMPTY) for n in range(1, 25))
    birth = Birth(
        gateway_version="t",
        slot_count=24,
        rentable_count=0,
        charging_count=0,
        empty_count=24,
        faulted_count=0,
        min_rentable_soc_percent=80,
        clock_synchronised=True,
        slots=slots,
    )
    enqueue(outbox, birth)
    outbox.prune_dead_letters(keep=0)


def telemetry_dropped(outbox: Outbox) -> None:
    enqueue(outbox, CommandResult(command_id="c", status=CommandStatus.FAILED))
    enqueue(outbox, StateChange(slot=1, state=SlotState.CHARGING))
    if outbox.stats().telemetry_dropped != 1:
        raise RuntimeError("the state change was stored; the scenario needs a smaller share")


def nothing_deleted(outbox: Outbox) -> None:
    for slot in range(1, 4):
        enqueue(outbox, fault(slot))


SCENARIOS: dict[str, Callable[[Outbox], None]] = {
    "remove": remove_one_by_one,
    "remove_many": remove_many,
    "remove_newest": remove_newest_only,
    "dead_letter": dead_letter_and_prune,
    "coalesce": coalesce,
    "coalesce_remove": coalesce_then_remove,
    "evict": evict,
    "too_large": too_large_then_prune,
    "dropped": telemetry_dropped,
    "no_delete": nothing_deleted,
}


def main(database: Path, scenario: str) -> None:
    SCENARIOS[scenario](open_outbox(database, scenario))
    report("done")
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
