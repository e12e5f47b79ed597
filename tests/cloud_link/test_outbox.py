"""Outbox on a real SQLite file: sequence numbers, lanes, size bounds and dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_link import (
    Birth,
    CommandResult,
    CommandStatus,
    EjectOutcomeEvent,
    EjectReport,
    FaultEvent,
    Heartbeat,
    OutboxFullError,
    OutboxLimits,
    SlotSnapshot,
    StateChange,
    StockReport,
    parse_message,
)
from cloud_link.clock import ManualClock
from cloud_link.messages import Lane, OutboxStats
from cloud_link.outbox import CHECKPOINT_EVERY_DELETES, Outbox
from cloud_link.storage import JOURNAL_SIZE_LIMIT_BYTES, Storage
from protocol.cabinet import EjectOutcome, FaultKind, LinkState, SlotState

CABINET = "cab-001"


def open_outbox(path: Path, **limits: object) -> tuple[Storage, Outbox]:
    storage = Storage(path)
    outbox = Outbox(
        storage,
        cabinet_id=CABINET,
        limits=OutboxLimits.model_validate(limits),
        clock=ManualClock(),
    )
    return storage, outbox


def fault(slot: int = 1) -> FaultEvent:
    return FaultEvent(fault=FaultKind.LOCK_FAULT, slot=slot)


def state(slot: int, new: SlotState = SlotState.CHARGING) -> StateChange:
    return StateChange(slot=slot, state=new)


def heartbeat() -> Heartbeat:
    stats = OutboxStats(
        pending=0, pending_bytes=0, telemetry_dropped=0, telemetry_coalesced=0, dead_letters=0
    )
    return Heartbeat(
        uptime_s=1, link=LinkState.ONLINE, clock_synchronised=True, interval_s=60, outbox=stats
    )


def fill_with_faults(outbox: Outbox) -> list[int]:
    """Queue faults until the outbox refuses one; return the stored sequence numbers."""
    stored: list[int] = []
    for slot in range(1, 200):
        try:
            stored.append(outbox.enqueue(fault(slot), topic="t", offline=True))
        except OutboxFullError:
            return stored
    pytest.fail("the outbox accepted 199 faults without refusing one")


def test_sequence_survives_reopen(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    first = [outbox.enqueue(fault(), topic="t", offline=False) for _ in range(3)]
    for entry in outbox.pending(10):
        outbox.remove(entry.id)
    storage.close()

    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    second = outbox.enqueue(fault(), topic="t", offline=False)
    storage.close()

    assert first == [1, 2, 3]
    assert second == 4


def test_payload_carries_header(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    seq = outbox.enqueue(fault(), topic="t", offline=True)
    message = parse_message(outbox.pending(1)[0].payload)
    storage.close()

    assert message.seq == seq
    assert message.cabinet_id == CABINET
    assert message.offline is True
    assert message.schema_version == 1
    assert message.data == fault()


def test_lanes_drain_in_priority_order(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    outbox.enqueue(state(1), topic="t", offline=False)
    outbox.enqueue(fault(1), topic="t", offline=False)
    result = CommandResult(command_id="c1", command="eject", status=CommandStatus.SUCCEEDED)
    outbox.enqueue(result, topic="t", offline=False)
    outbox.enqueue(fault(2), topic="t", offline=False)
    lanes = [entry.lane for entry in outbox.pending(10)]
    seqs = [entry.seq for entry in outbox.pending(10)]
    storage.close()

    assert lanes == [Lane.URGENT, Lane.TRANSACTIONAL, Lane.TRANSACTIONAL, Lane.TELEMETRY]
    assert seqs == [3, 2, 4, 1]


def test_pending_skips_excluded(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    for slot in (1, 2, 3):
        outbox.enqueue(fault(slot), topic="t", offline=False)
    first = outbox.pending(1)[0]
    rest = outbox.pending(5, exclude=frozenset({first.id}))
    storage.close()

    assert [entry.seq for entry in rest] == [2, 3]


def test_birth_and_heartbeat_always_coalesce(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    birth = Birth(
        gateway_version="t",
        slot_count=1,
        rentable_count=0,
        charging_count=0,
        empty_count=1,
        faulted_count=0,
        min_rentable_soc_percent=80,
        clock_synchronised=True,
    )
    outbox.enqueue(birth, topic="b", offline=False)
    outbox.enqueue(heartbeat(), topic="h", offline=False)
    newest_birth = outbox.enqueue(birth, topic="b", offline=False)
    newest_heartbeat = outbox.enqueue(heartbeat(), topic="h", offline=False)
    seqs = sorted(entry.seq for entry in outbox.pending(10))
    stats = outbox.stats()
    storage.close()

    assert seqs == [newest_birth, newest_heartbeat]
    assert stats.telemetry_coalesced == 2


def test_full_telemetry_coalesces_then_drops_oldest(tmp_path: Path) -> None:
    # 4096 bytes * 0.25 = 1024 bytes of telemetry; a state change is about 200 bytes.
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_bytes=4096, telemetry_share=0.25)
    seqs = [outbox.enqueue(state(slot), topic="t", offline=True) for slot in range(1, 21)]
    kept = [entry.seq for entry in outbox.pending(100)]
    stats = outbox.stats()
    used = outbox.lane_bytes(Lane.TELEMETRY)
    storage.close()

    assert used <= outbox.telemetry_budget
    assert kept == seqs[-len(kept) :]
    assert stats.telemetry_dropped == len(seqs) - len(kept)
    assert len(kept) >= 3


def test_full_telemetry_replaces_same_slot(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_bytes=4096, telemetry_share=0.25)
    for _ in range(3):
        outbox.enqueue(state(1), topic="t", offline=True)
        outbox.enqueue(state(2), topic="t", offline=True)
    filled = len(outbox.pending(100))
    for _ in range(10):
        newest = outbox.enqueue(state(1, SlotState.READY), topic="t", offline=True)
    kept = outbox.pending(100)
    stats = outbox.stats()
    storage.close()

    assert stats.telemetry_coalesced > 0
    assert newest in [entry.seq for entry in kept]
    assert len(kept) <= filled


def test_transactional_evicts_telemetry_never_itself(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_bytes=4096, telemetry_share=0.5)
    for slot in range(1, 9):
        outbox.enqueue(state(slot), topic="t", offline=True)
    stored_faults = fill_with_faults(outbox)
    pending = outbox.pending(200)
    transactional = [entry.seq for entry in pending if entry.lane is Lane.TRANSACTIONAL]
    telemetry = [entry for entry in pending if entry.lane is Lane.TELEMETRY]
    total = sum(len(entry.payload) for entry in pending)
    storage.close()

    assert transactional == stored_faults
    assert telemetry == []
    assert total <= 4096


def table_rows(storage: Storage) -> list[tuple[int, int]]:
    """Return (id, seq) of every outbox row in publish order, read from SQLite."""
    return [
        (row[0], row[1]) for row in storage.query("SELECT id, seq FROM outbox ORDER BY lane, id")
    ]


def test_pending_forgets_evicted_rows(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_bytes=4096, telemetry_share=0.25)
    for slot in range(1, 21):
        outbox.enqueue(state(slot), topic="t", offline=True)
        outbox.pending(100)  # keeps the cache of pending rows filled between appends
    cached = [(entry.id, entry.seq) for entry in outbox.pending(100)]
    stored = table_rows(storage)
    stats = outbox.stats()
    storage.close()

    assert stats.telemetry_dropped > 0
    assert cached == stored


def test_pending_after_refused_append(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_bytes=4096, telemetry_share=0.5)
    fill_with_faults(outbox)
    outbox.remove(outbox.pending(1)[0].id)
    outbox.enqueue(state(1), topic="t", offline=True)
    outbox.pending(100)  # fills the cache of pending rows
    # Too large even after evicting the state change, so the eviction is rolled back with it.
    result = CommandResult(command_id="c1", status=CommandStatus.FAILED, detail="x" * 300)
    with pytest.raises(OutboxFullError):
        outbox.enqueue(result, topic="t", offline=True)
    entries = outbox.pending(100)
    stored = table_rows(storage)
    storage.close()

    assert [entry.lane for entry in entries].count(Lane.TELEMETRY) == 1
    assert [(entry.id, entry.seq) for entry in entries] == stored


def append_in_failing_transaction(storage: Storage, outbox: Outbox) -> None:
    with storage.transaction(durable=True):
        outbox.enqueue(fault(2), topic="t", offline=False)
        raise RuntimeError("outer step failed")


def test_rolled_back_append_is_not_pending(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    first = outbox.enqueue(fault(1), topic="t", offline=False)
    outbox.pending(10)  # fills the cache of pending rows
    with pytest.raises(RuntimeError, match="outer step failed"):
        append_in_failing_transaction(storage, outbox)
    pending = [entry.seq for entry in outbox.pending(10)]
    after = outbox.enqueue(fault(3), topic="t", offline=False)
    storage.close()

    assert pending == [first]
    assert after == first + 1


def test_refused_message_does_not_use_a_sequence(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_bytes=4096)
    last = fill_with_faults(outbox)[-1]
    for entry in outbox.pending(1):
        outbox.remove(entry.id)
    after = outbox.enqueue(fault(), topic="t", offline=True)
    storage.close()

    assert after == last + 1


def test_oversized_message_goes_to_dead_letters(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite", max_message_bytes=512)
    report = EjectReport(outcome=EjectOutcome.FAILED)
    seq = outbox.enqueue(
        EjectOutcomeEvent(order_id="x" * 64, command_id="c" * 64, report=report),
        topic="t",
        offline=False,
    )
    slots = tuple(SlotSnapshot(slot=n, state=SlotState.EMPTY) for n in range(1, 25))
    big = Birth(
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
    big_seq = outbox.enqueue(big, topic="t", offline=False)
    pending = outbox.pending(10)
    letters = outbox.dead_letters()
    storage.close()

    assert [entry.seq for entry in pending] == [seq]
    assert [letter.seq for letter in letters] == [big_seq]
    assert letters[0].reason == "too_large"


def test_broker_rejection_moves_row(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    outbox.enqueue(fault(), topic="t", offline=False)
    entry = outbox.pending(1)[0]
    outbox.move_to_dead_letters(entry.id, "rejected by broker", 0x97)
    letters = outbox.dead_letters()
    stats = outbox.stats()
    remaining = outbox.pending(1)
    storage.close()

    assert remaining == []
    assert letters[0].reason_code == 0x97
    assert stats.dead_letters == 1
    assert stats.pending_bytes == 0


def test_dead_letters_are_bounded(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    for slot in range(1, 13):
        outbox.enqueue(fault(slot), topic="t", offline=False)
    for entry in outbox.pending(20):
        outbox.move_to_dead_letters(entry.id, "rejected by broker", 0x87)
    deleted = outbox.prune_dead_letters(keep=5)
    kept = [letter.seq for letter in outbox.dead_letters()]
    stats = outbox.stats()
    storage.close()

    assert deleted == 7
    assert kept == [12, 11, 10, 9, 8]
    assert stats.dead_letters == 12


def test_wal_stays_bounded(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    for round_number in range(3 * CHECKPOINT_EVERY_DELETES):
        outbox.enqueue(fault(round_number % 8 + 1), topic="t", offline=False)
        for entry in outbox.pending(1):
            outbox.remove(entry.id)
    wal = tmp_path / "db.sqlite-wal"
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    storage.close()

    assert wal_bytes <= JOURNAL_SIZE_LIMIT_BYTES


def test_lane_summary_lists_every_lane(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    outbox.enqueue(fault(1), topic="t", offline=False)
    outbox.enqueue(fault(2), topic="t", offline=False)
    outbox.enqueue(
        StockReport(rentable=1, charging=0, empty=3, faulted=0), topic="s", offline=False
    )
    outbox.enqueue(
        StockReport(rentable=0, charging=1, empty=3, faulted=0), topic="s", offline=False
    )
    summary = {row.lane: row for row in outbox.lane_summary()}
    storage.close()

    assert summary[Lane.URGENT].depth == 0
    assert summary[Lane.URGENT].oldest_created_at is None
    assert summary[Lane.TRANSACTIONAL].depth == 2
    assert summary[Lane.TRANSACTIONAL].bytes > 0
    assert summary[Lane.TELEMETRY].depth == 1  # the newer stock report replaced the older
    assert summary[Lane.TELEMETRY].oldest_created_at == ManualClock().wall()


def test_remove_many_skips_unknown_ids(tmp_path: Path) -> None:
    storage, outbox = open_outbox(tmp_path / "db.sqlite")
    for slot in (1, 2, 3, 4):
        outbox.enqueue(fault(slot), topic="t", offline=False)
    entries = outbox.pending(4)
    kept = entries[2]
    outbox.remove_many([entries[0].id, entries[1].id, entries[3].id, 10_000])
    left = outbox.pending(10)
    left_bytes = outbox.lane_bytes(kept.lane)
    storage.close()

    assert [entry.seq for entry in left] == [kept.seq]
    assert left_bytes == len(kept.payload)


def test_transaction_sets_needed_synchronous(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite")
    levels = []
    for durable in (True, True, False, False, True):
        with storage.transaction(durable=durable) as conn:
            levels.append(conn.execute("PRAGMA synchronous").fetchone()[0])
    storage.close()

    assert levels == [2, 2, 1, 1, 2]  # 2 is FULL, 1 is NORMAL
