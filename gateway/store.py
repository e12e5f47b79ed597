"""The daemon's persistent state, in the same SQLite file as the cloud link's outbox.

Disabled slots, board event watermarks, battery history and the evidence of each rent and
return live here. The outbox and the command results are the cloud link's tables in the same
file. Every write is one short transaction; the ones that decide whether a board event may be
acknowledged (watermarks) commit with synchronous=FULL.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_link.storage import limit_autocheckpoint
from firmware_bridge import EventWatermark

BUSY_TIMEOUT_MS = 5000
BATTERY_HISTORY_PER_BANK = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS disabled_slots (
    slot INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS event_watermarks (
    board_id TEXT PRIMARY KEY,  -- 64-bit serial as 16 hex digits: SQLite integers are signed
    boot_count INTEGER NOT NULL,
    event_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS slot_occupancy (
    slot INTEGER PRIMARY KEY,
    present INTEGER NOT NULL,
    bank_id TEXT
);
CREATE TABLE IF NOT EXISTS battery_history (
    id INTEGER PRIMARY KEY,
    bank_id TEXT NOT NULL,
    at REAL NOT NULL,
    health_pct INTEGER NOT NULL,
    cycles INTEGER
);
CREATE INDEX IF NOT EXISTS battery_history_bank ON battery_history (bank_id, at);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    command_id TEXT,
    slot INTEGER,
    bank_id TEXT,
    outcome TEXT,
    fail_reason TEXT,
    reject_reason TEXT,
    identified INTEGER,
    bank_at_eject TEXT,
    bank_at_return TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_bank ON orders (bank_id, created_at);
CREATE TABLE IF NOT EXISTS order_steps (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL,
    at REAL NOT NULL,
    step TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS order_steps_order ON order_steps (order_id, id);
"""


@dataclass(frozen=True, slots=True)
class HealthPoint:
    at: float
    health_pct: int
    cycles: int | None


@dataclass(frozen=True, slots=True)
class OrderRow:
    order_id: str
    kind: str
    command_id: str | None
    slot: int | None
    bank_id: str | None
    outcome: str | None
    fail_reason: str | None
    reject_reason: str | None
    identified: bool | None
    bank_at_eject: dict[str, Any] | None
    bank_at_return: dict[str, Any] | None
    created_at: float
    steps: tuple[tuple[float, str, str], ...]


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL mode; raise when SQLite keeps another journal mode."""
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(
            f"SQLite kept journal mode {mode!r} instead of WAL; the state directory must be on "
            "a local file system that supports shared memory"
        )


class GatewayStore:
    """The daemon's tables; also the bridge's `BridgeStore`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        _enable_wal(self._conn)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # The daemon keeps these tables in the cloud link's file, which `CloudLink.run`
        # checkpoints from a worker thread (`checkpoint_in_background`).
        limit_autocheckpoint(self._conn)
        self._conn.executescript(SCHEMA)
        self._occupancy: dict[int, tuple[bool, str | None]] = {}
        self._durable: bool | None = None  # PRAGMA synchronous last set: FULL, NORMAL, unset

    def close(self) -> None:
        self._conn.close()

    def _write(self, sql: str, params: tuple[Any, ...], *, durable: bool = False) -> None:
        self._write_all([(sql, params)], durable=durable)

    def _write_all(
        self, statements: list[tuple[str, tuple[Any, ...]]], *, durable: bool = False
    ) -> None:
        """Run `statements` in one transaction; `durable` commits with an fsync."""
        if durable is not self._durable:
            # PRAGMA synchronous is per connection, so it is set only when it changes.
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                self._conn.execute(sql, params)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # BridgeStore

    def load_disabled_slots(self) -> dict[int, str]:
        rows = self._conn.execute("SELECT slot, reason FROM disabled_slots").fetchall()
        return {int(slot): str(reason) for slot, reason in rows}

    def save_disabled_slot(self, slot: int, reason: str | None) -> None:
        if reason is None:
            self._write("DELETE FROM disabled_slots WHERE slot = ?", (slot,), durable=True)
        else:
            self._write(
                "INSERT OR REPLACE INTO disabled_slots (slot, reason, at) "
                "VALUES (?, ?, strftime('%s','now'))",
                (slot, reason),
                durable=True,
            )

    def load_event_watermarks(self) -> dict[int, EventWatermark]:
        rows = self._conn.execute(
            "SELECT board_id, boot_count, event_id FROM event_watermarks"
        ).fetchall()
        return {
            int(board_id, 16): EventWatermark(int(board_id, 16), int(boot_count), int(event_id))
            for board_id, boot_count, event_id in rows
        }

    def save_event_watermark(self, watermark: EventWatermark) -> None:
        self._write(
            "INSERT OR REPLACE INTO event_watermarks (board_id, boot_count, event_id) "
            "VALUES (?, ?, ?)",
            (f"{watermark.board_id:016X}", watermark.boot_count, watermark.event_id),
            durable=True,
        )

    def load_occupancy(self) -> dict[int, tuple[bool, str | None]]:
        rows = self._conn.execute("SELECT slot, present, bank_id FROM slot_occupancy").fetchall()
        occupancy = {int(slot): (bool(present), bank_id) for slot, present, bank_id in rows}
        self._occupancy = dict(occupancy)
        return occupancy

    def save_occupancy(self, occupancy: dict[int, tuple[bool, str | None]]) -> None:
        """Store the slots whose occupancy changed since the last call, in one transaction."""
        changed = {s: v for s, v in occupancy.items() if self._occupancy.get(s) != v}
        if not changed:
            return
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO slot_occupancy (slot, present, bank_id) VALUES (?, ?, ?)",
                [(slot, int(present), bank_id) for slot, (present, bank_id) in changed.items()],
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._occupancy.update(changed)

    # Battery history

    def add_health_point(self, bank_id: str, point: HealthPoint) -> None:
        self._write(
            "INSERT INTO battery_history (bank_id, at, health_pct, cycles) VALUES (?, ?, ?, ?)",
            (bank_id, point.at, point.health_pct, point.cycles),
        )
        self._write(
            "DELETE FROM battery_history WHERE bank_id = ? AND id NOT IN ("
            "SELECT id FROM battery_history WHERE bank_id = ? ORDER BY at DESC LIMIT ?)",
            (bank_id, bank_id, BATTERY_HISTORY_PER_BANK),
        )

    def health_history(self, bank_id: str) -> list[HealthPoint]:
        rows = self._conn.execute(
            "SELECT at, health_pct, cycles FROM battery_history WHERE bank_id = ? ORDER BY at",
            (bank_id,),
        ).fetchall()
        return [HealthPoint(at, health, cycles) for at, health, cycles in rows]

    # Orders: the evidence of each rent and return

    def open_order(
        self,
        order_id: str,
        kind: str,
        *,
        command_id: str | None,
        slot: int | None,
        at: float,
        step: tuple[str, str] | None = None,
    ) -> None:
        """Create an order unless it exists, with its first `step` (name, detail) if given.

        Not durable: a power loss may lose the row, so a command resumed after a restart
        opens its order again. The command store's durable record guards against a second
        eject, not this row.
        """
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "INSERT OR IGNORE INTO orders (order_id, kind, command_id, slot, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (order_id, kind, command_id, slot, at),
            )
        ]
        if step is not None:
            statements.append(
                (
                    "INSERT INTO order_steps (order_id, at, step, detail) VALUES (?, ?, ?, ?)",
                    (order_id, at, *step),
                )
            )
        self._write_all(statements)

    def update_order(self, order_id: str, **fields: Any) -> None:
        allowed = {
            "slot",
            "bank_id",
            "outcome",
            "fail_reason",
            "reject_reason",
            "identified",
            "bank_at_eject",
            "bank_at_return",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown order fields {sorted(unknown)}")
        if not fields:
            return
        values = [json.dumps(v) if isinstance(v, dict) else v for v in fields.values()]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._write(
            f"UPDATE orders SET {assignments} WHERE order_id = ?",
            (*values, order_id),
            durable=True,
        )

    def add_order_step(self, order_id: str, at: float, step: str, detail: str = "") -> None:
        self._write(
            "INSERT INTO order_steps (order_id, at, step, detail) VALUES (?, ?, ?, ?)",
            (order_id, at, step, detail),
        )

    def find_order(self, key: str) -> OrderRow | None:
        """Return an order by order id, or the newest order of a bank id."""
        row = self._conn.execute(
            "SELECT * FROM orders WHERE order_id = ? "
            "UNION ALL SELECT * FROM (SELECT * FROM orders WHERE bank_id = ? "
            "ORDER BY created_at DESC LIMIT 1) LIMIT 1",
            (key, key.upper()),
        ).fetchone()
        if row is None:
            return None
        columns = [
            description[0]
            for description in self._conn.execute("SELECT * FROM orders LIMIT 0").description
        ]
        values = dict(zip(columns, row, strict=True))
        steps = self._conn.execute(
            "SELECT at, step, detail FROM order_steps WHERE order_id = ? ORDER BY id",
            (values["order_id"],),
        ).fetchall()
        return OrderRow(
            order_id=values["order_id"],
            kind=values["kind"],
            command_id=values["command_id"],
            slot=values["slot"],
            bank_id=values["bank_id"],
            outcome=values["outcome"],
            fail_reason=values["fail_reason"],
            reject_reason=values["reject_reason"],
            identified=None if values["identified"] is None else bool(values["identified"]),
            bank_at_eject=_json_or_none(values["bank_at_eject"]),
            bank_at_return=_json_or_none(values["bank_at_return"]),
            created_at=values["created_at"],
            steps=tuple((at, step, detail) for at, step, detail in steps),
        )


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None
