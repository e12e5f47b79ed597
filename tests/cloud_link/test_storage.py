"""`Storage` on a real SQLite file: WAL mode, rollbacks and background checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from cloud_link import StorageError
from cloud_link import storage as storage_module
from cloud_link.storage import Storage, checkpoint_in_background


def test_storage_opens_in_wal_mode(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite")
    mode = storage.conn.execute("PRAGMA journal_mode").fetchone()[0]
    storage.close()

    assert mode == "wal"


def test_storage_requires_wal() -> None:
    # An in-memory database cannot use WAL, so SQLite keeps the "memory" journal mode.
    with pytest.raises(StorageError, match="WAL"):
        Storage(Path(":memory:"))


def insert_orphan(storage: Storage) -> None:
    with storage.transaction(durable=True) as conn:
        conn.execute("INSERT INTO child (parent_id) VALUES (42)")


def test_failed_commit_rolls_back(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite")
    storage.conn.executescript(
        """
        PRAGMA foreign_keys = ON;
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (
            parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
        );
        """
    )
    rollbacks: list[str] = []
    storage.on_rollback(lambda: rollbacks.append("rolled back"))

    # A deferred foreign key is checked at COMMIT, so the COMMIT itself fails.
    with pytest.raises(sqlite3.IntegrityError):
        insert_orphan(storage)
    open_after = storage.conn.in_transaction
    with storage.transaction(durable=True) as conn:
        conn.execute("INSERT INTO parent (id) VALUES (1)")
    children = storage.query("SELECT COUNT(*) FROM child")[0][0]
    storage.close()

    assert rollbacks == ["rolled back"]
    assert open_after is False
    assert children == 0


WAIT_S = 5.0
ROWS = 200


def rows_in_main_file(path: Path) -> int:
    """Count the rows that reached the database file itself, ignoring the WAL."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'item'").fetchone() is None:
            return 0  # not even the table has reached the file
        return int(conn.execute("SELECT count(*) FROM item").fetchone()[0])
    finally:
        conn.close()


async def test_background_checkpoint_copies_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    storage = Storage(path)
    storage.conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    with storage.transaction(durable=True) as conn:
        conn.executemany("INSERT INTO item (body) VALUES (?)", [("x" * 1000,)] * ROWS)
    assert rows_in_main_file(path) == 0  # the rows are still only in the WAL

    results: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    task = asyncio.create_task(checkpoint_in_background(path, 0.01, results.put_nowait))
    try:
        async with asyncio.timeout(WAIT_S):
            busy, frames, copied = await results.get()
            # Commits go on while checkpoints run on the worker thread.
            for number in range(20):
                with storage.transaction(durable=number % 2 == 0) as conn:
                    conn.execute("INSERT INTO item (body) VALUES ('more')")
            while (await results.get())[1] == 0:
                pass  # the WAL restarted after the first copy: wait for the next writes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert busy == 0
    assert frames > 0
    assert copied == frames
    assert rows_in_main_file(path) >= ROWS
    storage.close()
    assert rows_in_main_file(path) == ROWS + 20


async def test_unchanged_wal_is_not_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle daemon does no checkpoints: no thread wake-up, no fsync."""
    path = tmp_path / "db.sqlite"
    storage = Storage(path)
    with storage.transaction(durable=True) as conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY)")

    looked = asyncio.Event()
    looks = [0]
    real_stamp = storage_module._file_stamp

    def counting_stamp(wal: Path) -> tuple[int, int] | None:
        looks[0] += 1
        if looks[0] >= 5:
            looked.set()
        return real_stamp(wal)

    monkeypatch.setattr(storage_module, "_file_stamp", counting_stamp)
    results: list[tuple[int, int, int]] = []
    task = asyncio.create_task(checkpoint_in_background(path, 0.001, results.append))
    try:
        async with asyncio.timeout(WAIT_S):
            await looked.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        storage.close()

    assert len(results) == 1  # the first look found frames; the next four found no change
    assert results[0][1] > 0
