"""The outbox's cache of pending rows always agrees with the table, and `seq` has no gaps.

Random mixes of appends on every lane (with coalescing, eviction, dead letters and refused
appends that roll back), deletes, reads and reopens of the real SQLite file. At every read
and at the end, the rows that `Outbox.pending` returns from its cache are compared with a
`SELECT` of the table. Small cache batches make the cache hold only part of a lane.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from cloud_link import (
    BatteryHealth,
    Birth,
    CommandResult,
    CommandStatus,
    FaultEvent,
    Heartbeat,
    OutboxFullError,
    OutboxLimits,
    StateChange,
    StockReport,
    outbox_rows,
)
from cloud_link.clock import ManualClock
from cloud_link.messages import AnyMessageData, Lane, OutboxStats
from cloud_link.outbox import Outbox
from cloud_link.storage import Storage
from protocol.cabinet import FaultKind, LinkState, SlotState

# Small, so that short runs fill the telemetry share (eviction) and the whole outbox (refused
# appends, whose rollback restores evicted rows).
LIMITS = OutboxLimits(max_bytes=4096, telemetry_share=0.2, max_message_bytes=1200)
KINDS = ("state", "battery", "stock", "heartbeat", "birth", "fault", "result")


def message(kind: str, slot: int, size: int) -> AnyMessageData:
    if kind == "state":
        return StateChange(slot=slot, state=SlotState.CHARGING)
    if kind == "battery":
        return BatteryHealth(slot=slot, bank_id="00AABBCC", soh_percent=90)
    if kind == "stock":
        return StockReport(rentable=slot, charging=0, empty=1, faulted=0)
    if kind == "heartbeat":
        stats = OutboxStats(
            pending=slot,
            pending_bytes=0,
            telemetry_dropped=0,
            telemetry_coalesced=0,
            dead_letters=0,
        )
        return Heartbeat(
            uptime_s=1, link=LinkState.ONLINE, clock_synchronised=True, interval_s=60, outbox=stats
        )
    if kind == "birth":
        return Birth(
            gateway_version="v" * size,
            slot_count=slot,
            rentable_count=0,
            charging_count=0,
            empty_count=slot,
            faulted_count=0,
            min_rentable_soc_percent=80,
            clock_synchronised=True,
        )
    if kind == "fault":
        return FaultEvent(fault=FaultKind.OVERHEAT, slot=slot, detail="d" * min(size, 200))
    return CommandResult(
        command_id=f"c{slot}", status=CommandStatus.SUCCEEDED, detail="r" * min(size, 300)
    )


class Harness:
    """An outbox on a real file that can be reopened, as after a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.storage = Storage(path)
        self.outbox = Outbox(self.storage, cabinet_id="cab", limits=LIMITS, clock=ManualClock())

    def reopen(self) -> None:
        self.storage.conn.close()  # no checkpoint: as little as a crash leaves behind
        self.storage = Storage(self.path)
        self.outbox = Outbox(self.storage, cabinet_id="cab", limits=LIMITS, clock=ManualClock())

    def table(self) -> list[tuple[int, int, int, bytes]]:
        rows = self.storage.query("SELECT id, seq, lane, payload FROM outbox ORDER BY lane, id")
        return [(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    def check_pending(self, limit: int, exclude_every: int, skip_lanes: frozenset[Lane]) -> None:
        table = self.table()
        exclude = (
            frozenset(row[0] for row in table[::exclude_every]) if exclude_every else frozenset()
        )
        expected = [
            row for row in table if row[0] not in exclude and Lane(row[2]) not in skip_lanes
        ]
        entries = self.outbox.pending(limit, exclude=exclude, skip_lanes=skip_lanes)
        got = [(entry.id, entry.seq, int(entry.lane), entry.payload) for entry in entries]
        assert got == expected[:limit]


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.sampled_from(KINDS),
            st.integers(1, 12),
            st.integers(0, 1300),
        ),
        st.tuples(st.just("ack"), st.integers(1, 5), st.just(0), st.just(0)),
        st.tuples(st.just("ack_one"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("dead_letter"), st.integers(0, 3), st.just(0), st.just(0)),
        st.tuples(st.just("prune"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
        st.tuples(
            st.just("read"),
            st.integers(1, 12),
            st.integers(0, 3),
            st.sampled_from([0, 1, 2, 4, 5]),
        ),
    ),
    max_size=80,
)


def apply(harness: Harness, step: tuple[str, object, int, int], seqs: list[int]) -> None:
    name, first, second, third = step
    outbox = harness.outbox
    if name == "append":
        assert isinstance(first, str)
        try:
            seq = outbox.enqueue(message(first, second, third), topic="t", offline=True)
        except OutboxFullError:
            return
        seqs.append(seq)
    elif name == "ack":
        assert isinstance(first, int)
        outbox.remove_many([entry.id for entry in outbox.pending(first)])
    elif name == "ack_one":
        for entry in outbox.pending(1):
            outbox.remove(entry.id)
    elif name == "dead_letter":
        assert isinstance(first, int)
        for entry in outbox.pending(first + 1)[first:]:
            outbox.move_to_dead_letters(entry.id, "rejected by broker", 0x87)
    elif name == "prune":
        outbox.prune_dead_letters(keep=1)
    elif name == "reopen":
        harness.reopen()
    else:
        assert isinstance(first, int)
        skip = frozenset(lane for lane in Lane if third & (1 << lane))
        harness.check_pending(first, second, skip)


@given(operations, st.sampled_from([1, 2, 3, 64]))
def test_cache_matches_table_and_seq_has_no_gaps(
    steps: list[tuple[str, object, int, int]], batch_rows: int
) -> None:
    seqs: list[int] = []
    with (
        tempfile.TemporaryDirectory() as directory,
        mock.patch.object(outbox_rows, "CACHE_BATCH_ROWS", batch_rows),
    ):
        harness = Harness(Path(directory) / "db.sqlite")
        for step in steps:
            apply(harness, step, seqs)
        harness.check_pending(1000, 0, frozenset())
        harness.reopen()
        after_reopen = harness.outbox.enqueue(
            FaultEvent(fault=FaultKind.TAMPER), topic="t", offline=False
        )
        harness.storage.close()

    assert seqs == list(range(1, len(seqs) + 1))
    assert after_reopen == len(seqs) + 1
