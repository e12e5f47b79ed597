"""Durable outbox: every outgoing message is committed here before it is published.

Rows are drained by lane (`Lane.URGENT`, then `TRANSACTIONAL`, then `TELEMETRY`) and by
insertion order within a lane. A row is deleted only after its PUBACK.

Sequence numbers never repeat and leave no gap across a restart, because backends read a gap
as a lost message. The next number is kept in memory and taken inside the transaction that
stores the message; a rollback reloads it from the database. The database keeps every number
handed out: as the `seq` of a row still in `outbox`, or below the high-water mark `max_seq`
in `outbox_meta`. Every transaction that deletes rows from `outbox` or `dead_letters` raises
the mark to the highest number handed out so far, and so does an append that stores no
`outbox` row (dead-lettered or dropped at once). An append that stores its row leaves the
mark alone, which saves a page write per durable commit. On open, the next number is one
above the mark and above every stored `seq`.

Durability per lane:
- URGENT and TRANSACTIONAL rows commit with `synchronous=FULL` before `enqueue` returns,
  so they survive a process crash and a power loss.
- TELEMETRY rows commit with `synchronous=NORMAL`: they survive a process crash, but the
  newest ones may be lost on a power loss.
- Deleting a row after its PUBACK uses `synchronous=NORMAL`; losing that delete only causes
  a duplicate publish with the same sequence number, which backends drop.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

from cloud_link.clock import Clock
from cloud_link.config import OutboxLimits
from cloud_link.errors import OutboxFullError
from cloud_link.messages import (
    AnyMessageData,
    EnvelopeEncoder,
    Lane,
    OutboxStats,
    coalesce_key_of,
    lane_of,
)
from cloud_link.outbox_rows import ENTRY_COLUMNS, OutboxEntry, PendingCache, entry_from_row
from cloud_link.storage import Storage

logger = logging.getLogger(__name__)

ALWAYS_COALESCED = frozenset({"birth", "heartbeat", "stock"})
CHECKPOINT_EVERY_DELETES = 500
DEAD_LETTERS_KEPT = 1000
# Ids per DELETE statement in `remove_many`, well below SQLite's limit of bound parameters.
REMOVE_BATCH_ROWS = 500


class LaneSummary(NamedTuple):
    lane: Lane
    depth: int
    bytes: int
    oldest_created_at: float | None  # wall-clock seconds of the oldest row


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    topic: str
    size: int
    reason: str
    reason_code: int | None
    failed_at: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
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
CREATE INDEX IF NOT EXISTS outbox_coalesce ON outbox (coalesce_key) WHERE coalesce_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    reason TEXT NOT NULL,
    reason_code INTEGER,
    failed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_dedupe (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""

DEDUPE_PRUNE_EVERY = 1000
DEDUPE_RETENTION_S = 30 * 24 * 3600.0
"""How long an enqueue with a dedupe key is remembered. A board keeps an unacknowledged
event across a gateway restart but not across its own reboot, so days would do."""


class _RowOptions(NamedTuple):
    topic: str
    offline: bool
    qos: int
    retain: bool
    expiry_s: int | None
    correlation_data: bytes | None
    dedupe_key: str | None


class _NewRow(NamedTuple):
    lane: Lane
    seq: int
    payload: bytes
    coalesce_key: str | None
    created_at: float  # wall-clock seconds


SQLITE_FULL = 13  # sqlite3.SQLITE_FULL, the primary result code of a full disk
_COUNTERS = ("telemetry_dropped", "telemetry_coalesced", "dead_letters", "max_seq")


class Outbox:
    """The outbox tables in a `Storage` file.

    The outbox must be the only writer of its tables while it is open, because it keeps the
    lane sizes, the next sequence number and the first pending rows in memory.
    """

    def __init__(
        self, storage: Storage, *, cabinet_id: str, limits: OutboxLimits, clock: Clock
    ) -> None:
        self._storage = storage
        self._limits = limits
        self._clock = clock
        self._encoder = EnvelopeEncoder(cabinet_id)
        self._unsaved_drops = 0  # telemetry dropped while even the counter could not be saved
        self._deletes_since_checkpoint = 0
        self._keys_since_prune = DEDUPE_PRUNE_EVERY  # prune on the first keyed enqueue
        storage.conn.executescript(_SCHEMA)
        with storage.transaction(durable=True) as conn:
            for name in _COUNTERS:
                conn.execute(
                    "INSERT OR IGNORE INTO outbox_meta (key, value) VALUES (?, 0)", (name,)
                )
        self._lane_bytes: dict[Lane, int] = {}
        self._next_seq = 1
        self._saved_high_water = 0  # the value of `max_seq` in the database
        self._cache = PendingCache(self._load_lane)
        self._reload_state()
        storage.on_rollback(self._reload_state)

    @property
    def telemetry_budget(self) -> int:
        return int(self._limits.max_bytes * self._limits.telemetry_share)

    def enqueue(
        self,
        data: AnyMessageData,
        *,
        topic: str,
        offline: bool,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        correlation_data: bytes | None = None,
        dedupe_key: str | None = None,
    ) -> int:
        """Store one message and return its sequence number.

        With `dedupe_key`, a message whose key was enqueued before is not stored again, and
        the sequence number of the first one is returned. So a producer that repeats work
        after a crash does not publish one message under two sequence numbers.

        A telemetry message may be coalesced or dropped later, or at once when it is larger
        than the telemetry budget. A message over `max_message_bytes` goes straight to the
        dead letters. Raises `OutboxFullError` when a non-telemetry message does not fit even
        after every telemetry row was evicted.
        """
        lane = lane_of(data)
        options = _RowOptions(topic, offline, qos, retain, expiry_s, correlation_data, dedupe_key)
        try:
            return self._enqueue(data, lane, options)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != SQLITE_FULL:
                raise
        # The disk (or max_page_count) is full. Telemetry is dropped and counted; any other
        # message gets the space of every telemetry row, and one more try.
        if lane is Lane.TELEMETRY:
            self._unsaved_drops += 1
            logger.warning("disk full: telemetry message %s dropped", getattr(data, "kind", "?"))
            return 0
        with contextlib.suppress(sqlite3.OperationalError), self._storage.transaction(durable=True):
            self._evict_telemetry(0)
        try:
            return self._enqueue(data, lane, options)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != SQLITE_FULL:
                raise
            used = sum(self._lane_bytes.values())
            raise OutboxFullError(lane.name.lower(), 0, used, self._limits.max_bytes) from exc

    def _enqueue(self, data: AnyMessageData, lane: Lane, options: _RowOptions) -> int:
        topic = options.topic
        key = coalesce_key_of(data)
        with self._storage.transaction(durable=lane is not Lane.TELEMETRY) as conn:
            if options.dedupe_key is not None:
                known = conn.execute(
                    "SELECT seq FROM outbox_dedupe WHERE key = ?", (options.dedupe_key,)
                ).fetchone()
                if known is not None:
                    logger.info("%s already enqueued as seq=%d", options.dedupe_key, known[0])
                    return int(known[0])
                # NOTE: inside a caller's outer transaction, a full disk after this line and the
                # retry in enqueue() would leave the key naming a seq that was never stored.
                # No caller passes a dedupe key inside an outer transaction.
                self._remember_key(conn, options.dedupe_key)
            # The number counts as allocated once a statement stored it, so a failed statement
            # leaves no gap. A rollback of this transaction, or of one it joined, reloads it.
            seq = self._next_seq
            wall = self._clock.wall()
            payload = self._encoder.encode(seq=seq, wall_s=wall, offline=options.offline, data=data)
            size = len(payload)

            if size > self._limits.max_message_bytes:
                self._insert_dead_letter(seq, topic, payload, "too_large", None)
                self._next_seq = seq + 1
                self._save_high_water()
                logger.error("message seq=%d on %s is %d bytes; dead-lettered", seq, topic, size)
                return seq

            if not self._make_room(lane, key, size):
                self._bump("telemetry_dropped")
                self._next_seq = seq + 1
                self._save_high_water()
                return seq

            self._insert(conn, _NewRow(lane, seq, payload, key, wall), options)
            self._next_seq = seq + 1
        return seq

    def _remember_key(self, conn: sqlite3.Connection, key: str) -> None:
        """Record `key` for the sequence number this enqueue takes; forget expired keys."""
        now = self._clock.wall()
        conn.execute(
            "INSERT INTO outbox_dedupe (key, seq, created_at) VALUES (?, ?, ?)",
            (key, self._next_seq, now),
        )
        self._keys_since_prune += 1
        if self._keys_since_prune >= DEDUPE_PRUNE_EVERY:
            self._keys_since_prune = 0
            conn.execute(
                "DELETE FROM outbox_dedupe WHERE created_at < ?", (now - DEDUPE_RETENTION_S,)
            )

    def _insert(self, conn: sqlite3.Connection, row: _NewRow, options: _RowOptions) -> None:
        cursor = conn.execute(
            "INSERT INTO outbox (lane, seq, topic, payload, size, qos, retain, expiry_s,"
            " correlation_data, coalesce_key, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                int(row.lane),
                row.seq,
                options.topic,
                row.payload,
                len(row.payload),
                options.qos,
                int(options.retain),
                options.expiry_s,
                options.correlation_data,
                row.coalesce_key,
                row.created_at,
            ),
        )
        self._lane_bytes[row.lane] += len(row.payload)
        if not self._cache.takes_new_rows(row.lane):
            return
        if cursor.lastrowid is None:
            raise RuntimeError("SQLite reported no row id for an outbox insert")
        self._cache.added(
            OutboxEntry(
                id=cursor.lastrowid,
                seq=row.seq,
                lane=row.lane,
                topic=options.topic,
                payload=row.payload,
                qos=options.qos,
                retain=options.retain,
                expiry_s=options.expiry_s,
                correlation_data=options.correlation_data,
                coalesce_key=row.coalesce_key,
            )
        )

    def pending(
        self,
        limit: int,
        *,
        exclude: frozenset[int] = frozenset(),
        skip_lanes: frozenset[Lane] = frozenset(),
    ) -> list[OutboxEntry]:
        """Return up to `limit` rows in publish order, without the ids in `exclude`.

        Rows of the lanes in `skip_lanes` are left out.
        """
        return self._cache.first(limit, exclude=exclude, skip_lanes=skip_lanes)

    def _load_lane(self, lane: Lane, after_id: int, limit: int) -> list[OutboxEntry]:
        rows = self._storage.query(
            f"SELECT {ENTRY_COLUMNS} FROM outbox WHERE lane = ? AND id > ? ORDER BY id LIMIT ?",
            (int(lane), after_id, limit),
        )
        return [entry_from_row(row) for row in rows]

    def remove(self, entry_id: int) -> None:
        """Delete a row after its PUBACK; unknown ids (coalesced meanwhile) are ignored."""
        self.remove_many([entry_id])

    def remove_many(self, entry_ids: list[int]) -> None:
        """Delete rows after their PUBACKs in one transaction; unknown ids are ignored."""
        if not entry_ids:
            return
        deleted = 0
        with self._storage.transaction(durable=False) as conn:
            for start in range(0, len(entry_ids), REMOVE_BATCH_ROWS):
                batch = entry_ids[start : start + REMOVE_BATCH_ROWS]
                marks = ", ".join("?" * len(batch))
                rows = conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING id, lane, size", batch
                ).fetchall()
                for entry_id, lane, size in rows:
                    self._forget_row(entry_id, Lane(lane), size)
                deleted += len(rows)
            if deleted:
                self._save_high_water()
        for _ in range(deleted):
            self._after_delete()

    def move_to_dead_letters(self, entry_id: int, reason: str, reason_code: int | None) -> None:
        """Move a row the broker rejected or that cannot be published to the dead letters."""
        with self._storage.transaction(durable=True) as conn:
            row = conn.execute(
                "SELECT lane, seq, topic, payload, size FROM outbox WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            self._forget_row(entry_id, Lane(row[0]), row[4])
            self._insert_dead_letter(row[1], row[2], bytes(row[3]), reason, reason_code)
            self._save_high_water()
        logger.error(
            "message seq=%d on %s dead-lettered: %s (reason code %s)",
            row[1],
            row[2],
            reason,
            reason_code,
        )

    def prune_dead_letters(self, keep: int = DEAD_LETTERS_KEPT) -> int:
        """Delete all but the newest `keep` dead letters; the counter keeps counting."""
        with self._storage.transaction(durable=False) as conn:
            deleted: int = conn.execute(
                "DELETE FROM dead_letters WHERE id NOT IN"
                " (SELECT id FROM dead_letters ORDER BY id DESC LIMIT ?)",
                (keep,),
            ).rowcount
            if deleted:
                self._save_high_water()
        return deleted

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._storage.query(
            "SELECT seq, topic, size, reason, reason_code, failed_at FROM dead_letters"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*row) for row in rows]

    def stats(self) -> OutboxStats:
        counters = self._counters()
        count = self._storage.query("SELECT COUNT(*) FROM outbox")[0][0]
        return OutboxStats(
            pending=count,
            pending_bytes=sum(self._lane_bytes.values()),
            telemetry_dropped=counters["telemetry_dropped"] + self._unsaved_drops,
            telemetry_coalesced=counters["telemetry_coalesced"],
            dead_letters=counters["dead_letters"],
        )

    def lane_summary(self) -> list[LaneSummary]:
        """Return the depth, bytes and oldest row of every lane, empty lanes included."""
        found = {
            Lane(row[0]): row
            for row in self._storage.query(
                "SELECT lane, COUNT(*), SUM(size), MIN(created_at) FROM outbox GROUP BY lane"
            )
        }
        summaries = []
        for lane in Lane:
            row = found.get(lane)
            if row is None:
                summaries.append(LaneSummary(lane, 0, 0, None))
            else:
                summaries.append(LaneSummary(lane, row[1], int(row[2]), row[3]))
        return summaries

    def last_seq(self) -> int:
        """Return the highest sequence number allocated so far, 0 before the first."""
        return self._next_seq - 1

    def lane_bytes(self, lane: Lane) -> int:
        return self._lane_bytes[lane]

    def _make_room(self, lane: Lane, key: str | None, size: int) -> bool:
        """Coalesce or evict telemetry so a new row fits; False drops the new row."""
        if key is not None and key.split(":", 1)[0] in ALWAYS_COALESCED:
            self._delete_coalesced(key)

        if lane is Lane.TELEMETRY:
            budget = min(self.telemetry_budget, self._limits.max_bytes - self._reserved_used())
            if self._lane_bytes[lane] + size <= budget:
                return True
            if key is not None:
                self._delete_coalesced(key)
            self._evict_telemetry(budget - size)
            return self._lane_bytes[lane] + size <= budget

        total = sum(self._lane_bytes.values())
        if total + size <= self._limits.max_bytes:
            return True
        self._evict_telemetry(self._limits.max_bytes - self._reserved_used() - size)
        total = sum(self._lane_bytes.values())
        if total + size <= self._limits.max_bytes:
            return True
        raise OutboxFullError(lane.name.lower(), size, total, self._limits.max_bytes)

    def _reserved_used(self) -> int:
        return self._lane_bytes[Lane.URGENT] + self._lane_bytes[Lane.TRANSACTIONAL]

    def _delete_coalesced(self, key: str) -> None:
        rows = self._storage.query(
            "SELECT id, lane, size FROM outbox WHERE coalesce_key = ?", (key,)
        )
        for entry_id, lane, size in rows:
            self._storage.conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            self._forget_row(entry_id, Lane(lane), size)
            self._bump("telemetry_coalesced")
        if rows:
            self._save_high_water()

    def _evict_telemetry(self, target_bytes: int) -> None:
        """Drop the oldest telemetry rows until telemetry uses at most `target_bytes`."""
        target_bytes = max(target_bytes, 0)
        evicted = 0
        while self._lane_bytes[Lane.TELEMETRY] > target_bytes:
            rows = self._storage.query(
                "SELECT id, size FROM outbox WHERE lane = ? ORDER BY id LIMIT 64",
                (int(Lane.TELEMETRY),),
            )
            if not rows:
                break
            for entry_id, size in rows:
                self._storage.conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
                self._forget_row(entry_id, Lane.TELEMETRY, size)
                self._bump("telemetry_dropped")
                evicted += 1
                if self._lane_bytes[Lane.TELEMETRY] <= target_bytes:
                    break
        if evicted:
            self._save_high_water()

    def _forget_row(self, entry_id: int, lane: Lane, size: int) -> None:
        """Update the in-memory state after a row left the `outbox` table."""
        self._lane_bytes[lane] -= size
        self._cache.removed(lane, entry_id)

    def _save_high_water(self) -> None:
        """Raise `max_seq` to the highest sequence number allocated, in the open transaction.

        Call it in every transaction that deletes rows or allocates a number without storing
        a row, so that a restart never allocates a number that was handed out before.
        """
        allocated = self._next_seq - 1
        if allocated > self._saved_high_water:
            self._storage.conn.execute(
                "UPDATE outbox_meta SET value = ? WHERE key = 'max_seq'", (allocated,)
            )
            self._saved_high_water = allocated

    def _insert_dead_letter(
        self, seq: int, topic: str, payload: bytes, reason: str, reason_code: int | None
    ) -> None:
        self._storage.conn.execute(
            "INSERT INTO dead_letters (seq, topic, payload, size, reason, reason_code, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, topic, payload, len(payload), reason, reason_code, self._clock.wall()),
        )
        self._bump("dead_letters")

    def _bump(self, counter: str) -> None:
        self._storage.conn.execute(
            "UPDATE outbox_meta SET value = value + 1 WHERE key = ?", (counter,)
        )

    def _counters(self) -> dict[str, int]:
        return dict(self._storage.query("SELECT key, value FROM outbox_meta"))

    def _reload_state(self) -> None:
        """Read the in-memory state from the database, on open and after a rollback."""
        self._lane_bytes = dict.fromkeys(Lane, 0)
        for lane, total in self._storage.query("SELECT lane, SUM(size) FROM outbox GROUP BY lane"):
            self._lane_bytes[Lane(lane)] = int(total)
        self._cache.reset()

        saved, stored, dead = self._storage.query(
            "SELECT (SELECT value FROM outbox_meta WHERE key = 'max_seq'),"
            " (SELECT MAX(seq) FROM outbox), (SELECT MAX(seq) FROM dead_letters)"
        )[0]
        self._saved_high_water = saved or 0
        self._next_seq = max(self._saved_high_water, stored or 0, dead or 0) + 1

    def _after_delete(self) -> None:
        self._deletes_since_checkpoint += 1
        if self._deletes_since_checkpoint >= CHECKPOINT_EVERY_DELETES:
            self._deletes_since_checkpoint = 0
            self._storage.checkpoint()
