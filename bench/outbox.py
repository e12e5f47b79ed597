"""outbox: durable appends per second on the transactional lane against raw sqlite3 inserts.

Both sides write one row per transaction with `synchronous=FULL` in WAL mode and the pragmas
of `cloud_link.storage.Storage`, into the same table layout, each in its own file in one
directory. The raw side inserts a payload of the same size, encoded beforehand. Rounds
alternate between the two so that a disturbance on the machine hits both alike.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from bench.result import BenchResult, safe_ratio
from cloud_link.clock import SystemClock
from cloud_link.config import OutboxLimits
from cloud_link.messages import Lane, ReturnEvent, lane_of
from cloud_link.outbox import Outbox
from cloud_link.storage import (
    AUTOCHECKPOINT_PAGES,
    BUSY_TIMEOUT_S,
    JOURNAL_SIZE_LIMIT_BYTES,
    Storage,
)

TARGET_RATIO = 0.7
FULL_APPENDS = 10_000
QUICK_APPENDS = 2_000
ROUNDS = 4
TOPIC = "cabinets/BENCH-0001/events/bank_returned"
EVENT = ReturnEvent(slot=7, bank_id="00A1B2C3D4E5F601", recognised=True, soc_percent=83)

_RAW_TABLE = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lane INTEGER NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    expiry_s INTEGER,
    correlation_data BLOB,
    coalesce_key TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_lane_id ON outbox (lane, id);
"""


def open_raw(path: Path) -> sqlite3.Connection:
    """Open a plain sqlite3 connection with the pragmas that Storage sets."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(_RAW_TABLE)
    return conn


def raw_appends(conn: sqlite3.Connection, count: int, first_seq: int, payload: bytes) -> float:
    """Insert `count` rows, one committed transaction each; return the seconds taken."""
    started = time.perf_counter()
    for seq in range(first_seq, first_seq + count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO outbox (lane, seq, topic, payload, size, qos, retain, expiry_s,"
            " correlation_data, coalesce_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                int(Lane.TRANSACTIONAL),
                seq,
                TOPIC,
                payload,
                len(payload),
                1,
                0,
                None,
                None,
                None,
                time.time(),
            ),
        )
        conn.execute("COMMIT")
    return time.perf_counter() - started


def outbox_appends(outbox: Outbox, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        outbox.enqueue(EVENT, topic=TOPIC, offline=False)
    return time.perf_counter() - started


def run(quick: bool) -> tuple[BenchResult, list[str]]:
    total = QUICK_APPENDS if quick else FULL_APPENDS
    per_round = total // ROUNDS
    if lane_of(EVENT) is not Lane.TRANSACTIONAL:
        raise RuntimeError(f"{EVENT.kind} is no longer on the transactional lane")

    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as workdir:
        storage = Storage(Path(workdir) / "outbox.db")
        outbox = Outbox(
            storage,
            cabinet_id="BENCH-0001",
            limits=OutboxLimits(max_bytes=64 << 20),
            clock=SystemClock(),
        )
        outbox.enqueue(EVENT, topic=TOPIC, offline=False)
        payload = outbox.pending(1)[0].payload
        raw = open_raw(Path(workdir) / "raw.db")

        outbox_s = raw_s = 0.0
        for round_number in range(ROUNDS):
            raw_s += raw_appends(raw, per_round, round_number * per_round, payload)
            outbox_s += outbox_appends(outbox, per_round)
        raw.close()
        storage.close()

    appended = per_round * ROUNDS
    outbox_rate = appended / outbox_s
    raw_rate = appended / raw_s
    ratio = safe_ratio(outbox_rate, raw_rate)
    summary = [
        f"outbox: {appended} appends each side in {ROUNDS} alternating rounds, "
        f"payload {len(payload)} bytes, synchronous=FULL, one row per transaction",
        f"  Outbox.enqueue: {outbox_s:.2f} s, {outbox_rate:.0f} appends/s, "
        f"{outbox_s / appended * 1e6:.0f} us each",
        f"  raw sqlite3:    {raw_s:.2f} s, {raw_rate:.0f} appends/s, "
        f"{raw_s / appended * 1e6:.0f} us each",
    ]
    result = BenchResult(
        name="outbox",
        value=outbox_rate,
        unit="appends/s",
        baseline=raw_rate,
        ratio=ratio,
        target=f"ratio >= {TARGET_RATIO}",
        met=ratio >= TARGET_RATIO,
    )
    return result, summary
