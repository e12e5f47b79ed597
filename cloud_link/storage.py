"""The SQLite file behind the outbox and the command store.

One file holds both, so that a command's final result and the outbox row that publishes it
commit in one transaction. Writes use short `BEGIN IMMEDIATE` transactions in WAL mode; the
caller chooses per transaction whether the commit must survive a power loss.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud_link.errors import StorageError

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
# The WAL file is truncated to this size after a checkpoint, so it cannot grow without bound.
JOURNAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
# `checkpoint_in_background` keeps the WAL far below this, so commits on the event loop thread
# checkpoint only where nothing runs it (the offline tools, some tests).
AUTOCHECKPOINT_PAGES = 4096
BACKGROUND_CHECKPOINT_S = 2.0


def limit_autocheckpoint(conn: sqlite3.Connection) -> None:
    """Set the WAL size at which a commit on `conn` checkpoints by itself (the fallback)."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")


async def checkpoint_in_background(
    path: Path,
    interval_s: float = BACKGROUND_CHECKPOINT_S,
    on_checkpoint: Callable[[tuple[int, int, int]], None] | None = None,
) -> None:
    """Copy the WAL of the database at `path` into it every `interval_s`, until cancelled.

    The checkpoints run on a worker thread with their own connection, so no commit on the
    event loop thread waits for one. A commit that crossed the autocheckpoint size ran the
    checkpoint inside its COMMIT, with an fsync of the database file, and the command
    benchmark saw such commits take 10 to 30 ms before an UNLOCK. PASSIVE mode does not wait
    for the writer or for readers; it copies what it can and leaves the rest for the next one.
    A WAL file unchanged since the last checkpoint is skipped, so an idle daemon does no
    checkpoints. A failed checkpoint, or a failed open of the connection, is logged and tried
    again. `on_checkpoint` gets SQLite's result of each one: (busy, WAL frames, frames copied).
    """
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
    loop = asyncio.get_running_loop()
    opened: list[sqlite3.Connection] = []
    wal = path.with_name(path.name + "-wal")
    checkpointed: tuple[int, int] | None = None  # WAL size and mtime at the last checkpoint
    try:
        while True:
            await asyncio.sleep(interval_s)
            stamp = _file_stamp(wal)
            if stamp is not None and stamp == checkpointed:
                continue
            try:
                result = await loop.run_in_executor(worker, _checkpoint_passive, path, opened)
            except sqlite3.Error as exc:
                logger.warning(
                    "background WAL checkpoint of %s failed: %s; next try in %.0f s",
                    path,
                    exc,
                    interval_s,
                )
                continue
            # A checkpoint writes to the database file and the -shm index, not to the WAL.
            checkpointed = stamp if result[1] == result[2] else None
            if on_checkpoint is not None:
                on_checkpoint(result)
    finally:
        # The close runs after a checkpoint that may still be running on the worker thread.
        # Waiting for the thread to end means that the caller can close the database next.
        worker.submit(_close_all, opened)
        await asyncio.shield(asyncio.to_thread(worker.shutdown, wait=True))


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_size, status.st_mtime_ns)


def _checkpoint_passive(path: Path, opened: list[sqlite3.Connection]) -> tuple[int, int, int]:
    """Run one PASSIVE checkpoint, first opening the connection kept in `opened` if needed."""
    if not opened:
        # mode=rw: a state file deleted under the daemon is not created again, empty, here.
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        opened.append(conn)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    row = opened[0].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return (int(row[0]), int(row[1]), int(row[2]))


def _close_all(opened: list[sqlite3.Connection]) -> None:
    for conn in opened:
        conn.close()


class Storage:
    """An open SQLite database in WAL mode, used from one thread.

    NOTE: calls run on the event loop thread. A durable commit waits for an fsync, about
    0.4 ms on the development VM's disk; on slow eMMC it may stall the loop for longer.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._enable_wal()
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        limit_autocheckpoint(self.conn)
        self._depth = 0
        self._durable_open = False
        # PRAGMA synchronous is per connection and outlives transactions, so it is set only
        # when a transaction needs the other level. None: not set by this class yet.
        self._durable_level: bool | None = None
        self._rollback_hooks: list[Callable[[], None]] = []

    def _enable_wal(self) -> None:
        # SQLite returns the journal mode in force afterwards, which is the old one when the
        # change failed, for example for an in-memory database.
        row = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()
        mode = None if row is None else str(row[0]).lower()
        if mode != "wal":
            self.conn.close()
            raise StorageError(
                f"could not switch {self.path} to WAL journal mode, SQLite kept {mode!r}. "
                "Use a state directory on a local file system"
            )

    def close(self) -> None:
        self.checkpoint()
        self.conn.close()

    def on_rollback(self, hook: Callable[[], None]) -> None:
        """Register a function that reloads cached state after a rolled-back transaction."""
        self._rollback_hooks.append(hook)

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """Run one write transaction; nested calls join the outer one.

        `durable=True` commits with `synchronous=FULL`: the row survives a power loss once
        this returns. `durable=False` uses `synchronous=NORMAL`, which in WAL mode survives a
        process crash but may lose the last commits on a power loss. The rollback hooks run
        after every rollback, also when the COMMIT itself failed.
        """
        if self._depth > 0:
            if durable and not self._durable_open:
                raise RuntimeError("a durable transaction cannot join a non-durable one")
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return

        if durable is not self._durable_level:
            self.conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable_level = durable
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        self._durable_open = durable
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back by itself after some errors, such as a full disk.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            for hook in self._rollback_hooks:
                hook()
            raise
        finally:
            self._depth = 0
            self._durable_open = False

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            # A reader in another process can hold the WAL; the next checkpoint retries.
            logger.warning("WAL checkpoint of %s failed: %s", self.path, exc)
