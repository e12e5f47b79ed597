"""Read-only access to the daemon's SQLite state file, through sqlite-utils.

The daemon keeps the cloud link's tables (outbox, dead letters, commands) and its own (orders,
disabled slots, occupancy, watermarks) in one file, `GatewayConfig.database_path`. This module
reads it without the daemon, only reads, and creates no file: see `_connect`. sqlite-utils is
imported inside `open_state_file`, so that importing this module does not load it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from pydantic import TypeAdapter, ValidationError

from cloud_link.messages import Lane
from gateway.config import describe_errors
from gateway.i18n import _

if TYPE_CHECKING:
    from sqlite_utils import Database

T = TypeVar("T")

NEWEST_ORDERS_SHOWN = 10
LISTED_PROBLEMS = 3  # invalid values named in one error, because a damaged table may have many
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
BUSY_TIMEOUT_S = 5.0  # as long as the daemon's own connections wait for a lock
WAL_FORMAT = 2  # bytes 18 and 19 of the database header in WAL mode

# The columns these commands read, per table. Other columns may come and go between versions.
READ_COLUMNS: dict[str, frozenset[str]] = {
    "outbox": frozenset({"lane", "size", "created_at"}),
    "outbox_meta": frozenset({"key", "value"}),
    "commands": frozenset({"command_id", "state", "body", "received_at"}),
    "orders": frozenset(
        {
            "order_id",
            "kind",
            "slot",
            "bank_id",
            "outcome",
            "fail_reason",
            "reject_reason",
            "identified",
            "created_at",
        }
    ),
    "disabled_slots": frozenset({"slot", "reason", "at"}),
}


class StateFileError(Exception):
    """A state file that cannot be read: a translated `text` and an English message."""

    def __init__(self, code: str, text: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class LaneBacklog:
    lane: str
    messages: int
    bytes: int
    oldest_at: float | None  # wall-clock time the oldest message was queued


@dataclass(frozen=True)
class StoredCommand:
    command_id: str
    command: str | None  # the request's type, None when its body was not stored
    slot: int | None
    received_at: float


@dataclass(frozen=True)
class StoredOrder:
    order_id: str
    kind: str  # "rent" or "return"
    slot: int | None
    bank_id: str | None
    outcome: str | None  # an EjectOutcome value, or None for a return or a rent in progress
    fail_reason: str | None
    reject_reason: str | None
    identified: bool | None  # returns only: whether the bank id was read
    created_at: float


@dataclass(frozen=True)
class DisabledSlot:
    slot: int
    reason: str
    disabled_at: float | None


@dataclass(frozen=True)
class StateSummary:
    path: str
    file_bytes: int  # the database file and its WAL file
    last_written_at: float
    lanes: list[LaneBacklog]
    dead_letters: int
    telemetry_dropped: int
    commands_in_progress: list[StoredCommand]
    newest_orders: list[StoredOrder]
    disabled_slots: list[DisabledSlot]


def _read_header(path: Path) -> bytes:
    """Return the database header. Raise StateFileError unless `path` is a readable SQLite file."""
    try:
        with path.open("rb") as file:
            header = file.read(HEADER_BYTES)
    except FileNotFoundError:
        text = _(
            "The state file {path} does not exist. The daemon has not run yet with "
            "cabinet.state_dir = {state_dir}, or the path is wrong.",
            path=str(path),
            state_dir=str(path.parent),
        )
        raise StateFileError("state_missing", text, f"no such file: {path}") from None
    except PermissionError as error:
        raise _permission_denied(path, str(error)) from None
    except OSError as error:
        text = _("Cannot read the state file {path}.", path=str(path))
        raise StateFileError("read_failed", text, str(error)) from None
    if not header.startswith(SQLITE_MAGIC):
        raise _not_a_state_file(path, "not an SQLite database")
    return header


def _permission_denied(path: Path, detail: str) -> StateFileError:
    text = _(
        "Permission denied on the state file {path}. Run the command as the gateway's user "
        "or as root (sudo).",
        path=str(path),
    )
    return StateFileError("permission_denied", text, detail)


def _not_a_state_file(path: Path, detail: str) -> StateFileError:
    text = _("{path} is not a gateway state file.", path=str(path))
    return StateFileError("not_a_state_file", text, f"{path}: {detail}")


def _connect(path: Path, header: bytes) -> sqlite3.Connection:
    """Open `path` read-only without creating its -wal or -shm file.

    A reader of a WAL database that has no -wal file creates the -wal and -shm files, even
    with mode=ro (seen with SQLite 3.40.1). No -wal file means that no connection has the file
    open and that every commit is in the main file, so it is read as immutable, without locks.
    Otherwise the daemon runs or was killed, and SQLite reads the existing -wal file next to a
    running writer.
    """
    wal_mode = header[18:20] == bytes([WAL_FORMAT, WAL_FORMAT])
    immutable = wal_mode and not Path(f"{path}-wal").exists()
    # NOTE: a daemon that starts during the read writes to a new -wal file, which this
    # connection does not see. A daemon that stops cleanly between the check and the open
    # leaves empty -wal and -shm files behind, which its next start reuses.
    uri = path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)


def _sqlite_error(path: Path, error: sqlite3.Error) -> StateFileError:
    name = getattr(error, "sqlite_errorname", "")
    detail = f"{name or type(error).__name__}: {error}"
    if name == "SQLITE_NOTADB":
        return _not_a_state_file(path, detail)
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        # SQLite could not open or lock the -wal or -shm file, most often for lack of permission.
        return _permission_denied(path, detail)
    return StateFileError(
        "read_failed", _("Cannot read the state file {path}.", path=str(path)), detail
    )


def _check_schema(db: Database, path: Path) -> None:
    tables = set(db.table_names())
    missing = sorted(set(READ_COLUMNS) - tables)
    if len(missing) == len(READ_COLUMNS):
        raise _not_a_state_file(path, f"none of the tables {sorted(READ_COLUMNS)}")
    if missing:
        names_text = ", ".join(missing)
        text = _(
            "Table {table} is missing from {path}. The file may come from another gateway version.",
            table=names_text,
            path=str(path),
        )
        raise StateFileError("unexpected_schema", text, f"{path}: missing tables {names_text}")
    for table, columns in READ_COLUMNS.items():
        absent = sorted(columns - set(db.table(table).columns_dict))
        if absent:
            text = _(
                "Table {table} in {path} lacks the columns {columns}. The file may come from "
                "another gateway version.",
                table=table,
                path=str(path),
                columns=", ".join(absent),
            )
            raise StateFileError(
                "unexpected_schema", text, f"{path}: table {table} lacks columns {absent}"
            )


@contextlib.contextmanager
def open_state_file(path: Path) -> Iterator[Database]:
    """Yield the state file as a sqlite-utils Database, all reads in one snapshot.

    Raises StateFileError for a missing, unreadable or foreign file.
    """
    from sqlite_utils import Database

    header = _read_header(path)
    try:
        conn = _connect(path, header)
    except sqlite3.Error as error:
        raise _sqlite_error(path, error) from None
    try:
        db = Database(conn, execute_plugins=False)
        # One read transaction, so that the tables agree with each other.
        conn.execute("BEGIN")
        _check_schema(db, path)
        yield db
    except sqlite3.Error as error:
        raise _sqlite_error(path, error) from None
    finally:
        conn.close()


class _LaneRow(NamedTuple):
    lane: Lane
    messages: int
    bytes: int
    oldest: float | None


def _validated(table: str, rows: object, adapter: TypeAdapter[list[T]], path: Path) -> list[T]:
    """Check the types of the rows read from `table`, converting as the daemon wrote them."""
    try:
        return adapter.validate_python(rows)
    except ValidationError as error:
        text = _(
            "Table {table} in {path} contains a value this gateway version cannot read.",
            table=table,
            path=str(path),
        )
        problems = describe_errors(error)
        listed = "; ".join(problems[:LISTED_PROBLEMS])
        if len(problems) > LISTED_PROBLEMS:
            listed += f"; {len(problems) - LISTED_PROBLEMS} more"
        raise StateFileError("unexpected_schema", text, f"{path}: {table}: {listed}") from None


def read_lanes(db: Database, path: Path) -> list[LaneBacklog]:
    """Return the backlog of every lane, empty lanes included, in drain order."""
    rows = db.query(
        "SELECT lane, COUNT(*) AS messages, SUM(size) AS bytes, MIN(created_at) AS oldest "
        "FROM outbox GROUP BY lane"
    )
    checked = _validated("outbox", list(rows), TypeAdapter(list[_LaneRow]), path)
    found = {row.lane: row for row in checked}
    backlogs = []
    for lane in Lane:
        row = found.get(lane, _LaneRow(lane, 0, 0, None))
        backlogs.append(LaneBacklog(lane.name.lower(), row.messages, row.bytes, row.oldest))
    return backlogs


def read_counters(db: Database, path: Path) -> dict[str, int]:
    """Return the outbox counters: dead letters, telemetry dropped and coalesced, max_seq."""
    rows = [(row["key"], row["value"]) for row in db.query("SELECT key, value FROM outbox_meta")]
    return dict(_validated("outbox_meta", rows, TypeAdapter(list[tuple[str, int]]), path))


def read_commands_in_progress(db: Database, path: Path) -> list[StoredCommand]:
    rows = db.query(
        "SELECT command_id, body, received_at FROM commands WHERE state = 'in_progress' "
        "ORDER BY received_at"
    )
    commands = []
    for row in rows:
        request = _command_of(row["body"])
        commands.append(
            {
                "command_id": row["command_id"],
                "command": request.get("type"),
                "slot": request.get("slot"),
                "received_at": row["received_at"],
            }
        )
    return _validated("commands", commands, TypeAdapter(list[StoredCommand]), path)


def _command_of(body: object) -> dict[str, Any]:
    """Return the `command` object of a stored CommandBody, or {} when it cannot be read."""
    try:
        parsed = json.loads(body) if isinstance(body, str) else {}
    except json.JSONDecodeError:
        return {}
    command = parsed.get("command") if isinstance(parsed, dict) else None
    return command if isinstance(command, dict) else {}


def read_orders(
    db: Database,
    path: Path,
    limit: int,
    *,
    bank_id: str | None = None,
    slot: int | None = None,
) -> list[StoredOrder]:
    """Return the newest orders first, of one bank or slot when given."""
    where = []
    params: dict[str, Any] = {"limit": limit}
    if bank_id is not None:
        where.append("bank_id = :bank_id")
        params["bank_id"] = bank_id.upper()
    if slot is not None:
        where.append("slot = :slot")
        params["slot"] = slot
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    # The columns have the names of StoredOrder's fields.
    columns = ", ".join(sorted(READ_COLUMNS["orders"]))
    rows = db.query(
        f"SELECT {columns} FROM orders {condition}ORDER BY created_at DESC LIMIT :limit", params
    )
    return _validated("orders", list(rows), TypeAdapter(list[StoredOrder]), path)


def read_disabled_slots(db: Database, path: Path) -> list[DisabledSlot]:
    rows = db.query("SELECT slot, reason, at AS disabled_at FROM disabled_slots ORDER BY slot")
    # `at` is stored as strftime('%s') text, which the validation turns into a number.
    return _validated("disabled_slots", list(rows), TypeAdapter(list[DisabledSlot]), path)


def read_summary(path: Path) -> StateSummary:
    """Read the summary of a state file. Raise StateFileError when it cannot be read."""
    with open_state_file(path) as db:
        counters = read_counters(db, path)
        lanes = read_lanes(db, path)
        commands = read_commands_in_progress(db, path)
        orders = read_orders(db, path, NEWEST_ORDERS_SHOWN)
        disabled = read_disabled_slots(db, path)
    stats = [file.stat() for file in (path, Path(f"{path}-wal")) if file.exists()]
    return StateSummary(
        path=str(path),
        file_bytes=sum(stat.st_size for stat in stats),
        last_written_at=max((stat.st_mtime for stat in stats), default=0.0),
        lanes=lanes,
        dead_letters=counters.get("dead_letters", 0),
        telemetry_dropped=counters.get("telemetry_dropped", 0),
        commands_in_progress=commands,
        newest_orders=orders,
        disabled_slots=disabled,
    )
