"""`Storage` on a real SQLite file: WAL mode and rollbacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloud_link import StorageError
from cloud_link.storage import Storage


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
