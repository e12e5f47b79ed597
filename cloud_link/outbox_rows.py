"""Outbox rows in memory: the entry type and a cache of the first pending rows of each lane.

The publisher requests the next rows after every batch of PUBACKs. One `SELECT` per request
built an entry for every row read, although about one row becomes publishable per PUBACK.
`PendingCache` reads each lane in batches instead, and the `Outbox` reports every insert and
delete to it, so the cache never returns a row that was replaced, evicted, dead-lettered or
deleted after its PUBACK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cloud_link.messages import Lane

# Rows read from SQLite per batch, and the max rows a lane caches from inserts alone. The
# bound keeps the cache small while a long outage fills the outbox.
CACHE_BATCH_ROWS = 64

ENTRY_COLUMNS = (
    "id, seq, lane, topic, payload, qos, retain, expiry_s, correlation_data, coalesce_key"
)


@dataclass(frozen=True)
class OutboxEntry:
    """One stored message, ready to publish."""

    id: int
    seq: int
    lane: Lane
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry_s: int | None
    correlation_data: bytes | None
    coalesce_key: str | None = None


def entry_from_row(row: tuple[Any, ...]) -> OutboxEntry:
    """Build an entry from a row of `SELECT {ENTRY_COLUMNS}`."""
    return OutboxEntry(
        id=row[0],
        seq=row[1],
        lane=Lane(row[2]),
        topic=row[3],
        payload=bytes(row[4]),
        qos=row[5],
        retain=bool(row[6]),
        expiry_s=row[7],
        correlation_data=None if row[8] is None else bytes(row[8]),
        coalesce_key=row[9],
    )


# Reads up to `limit` rows of `lane` with an id above `after_id`, in id order.
LaneLoader = Callable[[Lane, int, int], list[OutboxEntry]]


class _LaneRows:
    """The cached head of one lane.

    Invariant: `rows` contains every row of the lane whose id is at most `read_upto`, and no
    row that has left the table. When `complete` is set, `rows` contains every row of the
    lane.
    Row ids grow with every insert (the table uses AUTOINCREMENT), so `rows`, filled in
    insertion order, stays in id order.
    """

    __slots__ = ("complete", "read_upto", "rows")

    def __init__(self) -> None:
        self.rows: dict[int, OutboxEntry] = {}
        self.read_upto = 0
        self.complete = False


class PendingCache:
    """The first pending rows of each lane, in publish order."""

    def __init__(self, load: LaneLoader) -> None:
        self._load = load
        self._lanes = {lane: _LaneRows() for lane in Lane}

    def reset(self) -> None:
        """Forget every cached row. Call it after a rollback or a change by another writer."""
        self._lanes = {lane: _LaneRows() for lane in Lane}

    def takes_new_rows(self, lane: Lane) -> bool:
        """Return whether `added` would keep a new row of `lane`.

        When it would not, callers need not build the entry for it.
        """
        return self._lanes[lane].complete

    def added(self, entry: OutboxEntry) -> None:
        """Record a row just inserted, which has the highest id of its lane."""
        head = self._lanes[entry.lane]
        if not head.complete:
            return  # beyond `read_upto`, so a later batch reads it
        if len(head.rows) < CACHE_BATCH_ROWS:
            head.rows[entry.id] = entry
            return
        # Stop caching the lane's tail, so that an outage cannot fill memory with rows.
        head.complete = False
        head.read_upto = next(reversed(head.rows))

    def removed(self, lane: Lane, entry_id: int) -> None:
        """Record a row deleted from the table."""
        self._lanes[lane].rows.pop(entry_id, None)

    def first(
        self, limit: int, *, exclude: frozenset[int], skip_lanes: frozenset[Lane]
    ) -> list[OutboxEntry]:
        """Return up to `limit` rows in publish order, without the ids in `exclude`.

        Lanes in `skip_lanes` are left out entirely.
        """
        found: list[OutboxEntry] = []
        if limit <= 0:
            return found
        for lane in Lane:
            if lane in skip_lanes:
                continue
            head = self._lanes[lane]
            if _collect(head.rows.values(), exclude, found, limit):
                return found
            while not head.complete:
                if _collect(self._read_more(lane, head), exclude, found, limit):
                    return found
        return found

    def _read_more(self, lane: Lane, head: _LaneRows) -> list[OutboxEntry]:
        batch = self._load(lane, head.read_upto, CACHE_BATCH_ROWS)
        for entry in batch:
            head.rows[entry.id] = entry
        if batch:
            head.read_upto = batch[-1].id
        if len(batch) < CACHE_BATCH_ROWS:
            head.complete = True
        return batch


def _collect(
    entries: Iterable[OutboxEntry], exclude: frozenset[int], found: list[OutboxEntry], limit: int
) -> bool:
    """Append the entries not in `exclude` to `found`; True once it contains `limit` entries."""
    for entry in entries:
        if entry.id in exclude:
            continue
        found.append(entry)
        if len(found) >= limit:
            return True
    return False
