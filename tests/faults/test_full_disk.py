"""A full disk under the outbox, made with SQLite's max_page_count on the link's connection."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from protocol.cabinet import LinkState
from protocol.slotbus.codes import LockState
from tests.faults.harness import fault_rig, poll_until, wait_daemon
from tests.faults.windows import WindowCounter
from tests.gateway.rig import Rig
from tests.support.mosquitto import BrokerFactory, MosquittoBroker

pytestmark = pytest.mark.faults

DRAIN_WAIT_S = 60.0
SERVED_WAIT_S = 20.0
UNLIMITED_PAGES = 1_073_741_823
# Faster retries than production, so that a test waits seconds, not the documented 30 s.
OUTBOX: dict[str, Any] = {"no_subscriber_retry_s": 0.5}


def cloud_connection(rig: Rig) -> sqlite3.Connection:
    """The cloud link's own SQLite connection; max_page_count applies per connection."""
    assert rig.daemon is not None
    connection: sqlite3.Connection = rig.daemon.cloud._storage.conn
    return connection


def fill_disk(rig: Rig) -> int:
    """Let the database file grow no further and use up its free pages; return its page count.

    Rows deleted shortly before leave free pages inside the file, which would take new rows
    for a while without any error, so a filler table takes them first.
    """
    connection = cloud_connection(rig)
    # Created first: a full file has no page left for a new table.
    connection.execute("CREATE TABLE IF NOT EXISTS disk_filler (data BLOB NOT NULL)")
    pages: int = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    for size in (4000, 1000, 250, 60, 10):
        while True:
            try:
                connection.execute("INSERT INTO disk_filler (data) VALUES (zeroblob(?))", (size,))
            except sqlite3.OperationalError:
                break
    return pages


def free_disk(rig: Rig) -> None:
    connection = cloud_connection(rig)
    connection.execute(f"PRAGMA max_page_count = {UNLIMITED_PAGES}")
    connection.execute("DROP TABLE IF EXISTS disk_filler")


def returns_in(rig: Rig, slot: int) -> int:
    assert rig.daemon is not None
    events = rig.daemon.feed.recent(1000)
    return sum(1 for e in events if e.kind == "bank_returned" and e.slot == slot)


async def returns_and_removals(rig: Rig, rounds: int) -> list[int]:
    """Return two banks per round, wait for the bus to be polled on, then pull them out again.

    Returns the slots in the order of their returns. While the outbox cannot take an event the
    board keeps it, so the wait is for bus traffic, not for the return itself. Stops early if
    the daemon died.
    """
    assert rig.daemon_task is not None
    task = rig.daemon_task
    cabinet = rig.sim.cabinet
    latched = WindowCounter(cabinet)
    slots: list[int] = []
    for _ in range(rounds):
        requests = bus_requests(rig)
        for slot in cabinet.free_slots()[:2]:
            cabinet.insert_bank(slot, charge=90.0)
            slots.append(slot)
        # A bank pulled out before the board latched its insertion was never returned.
        await poll_until(lambda: len(latched.returns) >= len(slots))
        # The bus stays served: the boards are still polled.
        await wait_daemon(rig, partial(polled_or_dead, rig, requests + 1), within_s=SERVED_WAIT_S)
        if task.done():
            break
        for slot in slots[-2:]:
            if cabinet.slot(slot).lock is LockState.LOCKED:
                cabinet.tamper(slot)  # forced open and pulled out: a tamper fault
            elif cabinet.slot(slot).bank is not None:
                cabinet.remove_bank(slot)
    latched.close()
    return slots


def polled_or_dead(rig: Rig, requests: int) -> bool:
    assert rig.daemon_task is not None
    return rig.daemon_task.done() or bus_requests(rig) > requests


def bus_requests(rig: Rig) -> int:
    assert rig.daemon is not None
    return sum(board.requests for board in rig.daemon.bridge.stats().boards)


async def go_offline(rig: Rig, broker: MosquittoBroker) -> None:
    assert rig.daemon is not None
    cloud = rig.daemon.cloud
    await rig.inbox.wait_for("birth")
    broker.stop()
    async with asyncio.timeout(20):
        await cloud.wait_until(lambda s: s.link is LinkState.OFFLINE)


async def test_outbox_limit_drops_telemetry(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Invariant: with the outbox at its byte limit during an outage, telemetry is dropped and
    counted, every return is kept and delivered, the bus is still served, and all of it
    recovers without a restart."""
    broker = mosquitto_factory(persistence=True)
    # Room for every transactional message of the test, but telemetry may use only 800 bytes.
    overrides = {"mqtt": {"outbox": {"max_bytes": 16_000, "telemetry_share": 0.05, **OUTBOX}}}
    async with fault_rig(broker, tmp_path, overrides=overrides) as rig:
        assert rig.daemon is not None
        assert rig.daemon_task is not None
        daemon = rig.daemon
        await go_offline(rig, broker)
        slots = await returns_and_removals(rig, rounds=4)
        stats_full = daemon.cloud.outbox.stats()
        alive = not rig.daemon_task.done()

        broker.start()
        await rig.inbox.wait_count(
            "bank_returned", len(slots), lambda e: e.slot in slots, within_s=DRAIN_WAIT_S
        )
        async with asyncio.timeout(DRAIN_WAIT_S):
            await daemon.cloud.wait_until(lambda s: s.outbox.pending == 0)
        delivered = {m.seq: m.data for m in rig.inbox.messages if m.data.kind == "bank_returned"}

    assert alive
    assert stats_full.telemetry_dropped > 0
    assert [d.slot for _, d in sorted(delivered.items())] == slots


async def test_outbox_full_of_transactional(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Invariant: when even transactional messages no longer fit in the outbox, the daemon keeps
    running and serving the bus, the boards keep the unstored events, and every return arrives
    once the broker is back, without a restart."""
    broker = mosquitto_factory(persistence=True)
    # 10 returns and 10 tamper faults of about 240 bytes each cannot fit in 4096 bytes.
    overrides = {"mqtt": {"outbox": {"max_bytes": 4096, "telemetry_share": 0.1, **OUTBOX}}}
    async with fault_rig(broker, tmp_path, overrides=overrides) as rig:
        assert rig.daemon is not None
        assert rig.daemon_task is not None
        await go_offline(rig, broker)
        slots = await returns_and_removals(rig, rounds=5)
        assert not rig.daemon_task.done(), "the daemon stopped on a full outbox"

        broker.start()
        await rig.inbox.wait_count(
            "bank_returned", len(slots), lambda e: e.slot in slots, within_s=DRAIN_WAIT_S
        )
        delivered = {m.seq: m.data for m in rig.inbox.messages if m.data.kind == "bank_returned"}

    assert [d.slot for _, d in sorted(delivered.items())] == slots


async def test_full_disk_keeps_transactional(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Invariant: with the database file unable to grow (disk full) and the broker gone, the
    daemon keeps running and polling the boards, and telemetry is dropped and counted. No
    return is lost: once space is back, every return arrives without a restart."""
    broker = mosquitto_factory(persistence=True)
    async with fault_rig(broker, tmp_path, overrides={"mqtt": {"outbox": OUTBOX}}) as rig:
        assert rig.daemon is not None
        assert rig.daemon_task is not None
        daemon = rig.daemon
        await go_offline(rig, broker)
        pages = fill_disk(rig)
        slots = await returns_and_removals(rig, rounds=4)
        assert not rig.daemon_task.done(), "the daemon stopped on a full disk"
        stats_full = daemon.cloud.outbox.stats()
        held_pages = cloud_connection(rig).execute("PRAGMA page_count").fetchone()[0]

        free_disk(rig)
        broker.start()
        await rig.inbox.wait_count(
            "bank_returned", len(slots), lambda e: e.slot in slots, within_s=DRAIN_WAIT_S
        )
        delivered = {m.seq: m.data for m in rig.inbox.messages if m.data.kind == "bank_returned"}

    assert held_pages == pages
    assert [d.slot for _, d in sorted(delivered.items())] == slots
    assert stats_full.telemetry_dropped > 0
