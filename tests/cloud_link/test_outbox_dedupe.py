"""Enqueue with a dedupe key: a message repeated after a crash keeps its first sequence number."""

from __future__ import annotations

from pathlib import Path

from cloud_link import ReturnEvent
from cloud_link.clock import ManualClock
from cloud_link.config import OutboxLimits
from cloud_link.outbox import DEDUPE_PRUNE_EVERY, DEDUPE_RETENTION_S, Outbox
from cloud_link.storage import Storage

TOPIC = "cabinets/cab-001/event/bank_returned"


def open_outbox(database: Path, clock: ManualClock | None = None) -> Outbox:
    return Outbox(
        Storage(database),
        cabinet_id="cab-001",
        limits=OutboxLimits(),
        clock=clock or ManualClock(),
    )


def returned(slot: int) -> ReturnEvent:
    return ReturnEvent(slot=slot, bank_id="00A1B2C3D4E5F601", recognised=True, soc_percent=90)


def test_same_key_keeps_first_seq(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite")

    first = outbox.enqueue(returned(3), topic=TOPIC, offline=False, dedupe_key="b1/1/7/0")
    again = outbox.enqueue(returned(3), topic=TOPIC, offline=False, dedupe_key="b1/1/7/0")
    other = outbox.enqueue(returned(4), topic=TOPIC, offline=False, dedupe_key="b1/1/8/0")

    assert again == first
    assert other == first + 1
    assert [entry.seq for entry in outbox.pending(10)] == [first, other]


def test_key_survives_reopen_and_delivery(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite"
    outbox = open_outbox(database)
    first = outbox.enqueue(returned(3), topic=TOPIC, offline=False, dedupe_key="b1/1/7/0")
    outbox.remove_many([entry.id for entry in outbox.pending(10)])  # PUBACK received

    reopened = open_outbox(database)
    again = reopened.enqueue(returned(3), topic=TOPIC, offline=False, dedupe_key="b1/1/7/0")
    unkeyed = reopened.enqueue(returned(3), topic=TOPIC, offline=False)

    assert again == first
    assert [entry.seq for entry in reopened.pending(10)] == [unkeyed]
    assert unkeyed == first + 1


def test_expired_keys_are_forgotten(tmp_path: Path) -> None:
    clock = ManualClock()
    outbox = open_outbox(tmp_path / "outbox.sqlite", clock)
    first = outbox.enqueue(returned(3), topic=TOPIC, offline=False, dedupe_key="old")

    clock.advance(DEDUPE_RETENTION_S + 1)
    for number in range(DEDUPE_PRUNE_EVERY):
        outbox.enqueue(returned(4), topic=TOPIC, offline=False, dedupe_key=f"new-{number}")
    repeated = outbox.enqueue(returned(3), topic=TOPIC, offline=False, dedupe_key="old")

    assert repeated != first
