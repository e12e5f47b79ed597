"""The SQLite file behind the outbox and the command store.

One file holds both, so that a command's final result and the outbox row that publishes it
commit in one transaction. Writes use short `BEGIN IMMEDIATE` transactions in WAL mode; the
caller chooses per transaction whether the commit must survive a power loss.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud_link.errors import StorageError

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
# The WAL file is truncated to this size after a checkpoint, so it cannot grow without bound.
JOURNAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
AUTOCHECKPOINT_PAGES = 256


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
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
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
