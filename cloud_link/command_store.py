"""Idempotency store: each command id acts at most once, across redeliveries and restarts."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from enum import StrEnum

from cloud_link.clock import Clock
from cloud_link.commands import CommandBody
from cloud_link.config import CommandSettings
from cloud_link.errors import UnknownCommandError
from cloud_link.messages import CommandResult
from cloud_link.storage import Storage

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    body TEXT,
    key_id TEXT,
    reply_topic TEXT,
    correlation_data BLOB,
    unlock_token INTEGER NOT NULL,
    result TEXT,
    received_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS commands_finished ON commands (state, finished_at);
"""


def unlock_token_for(command_id: str) -> int:
    """Return the board unlock token of a command: non-zero, 32-bit, the same on every retry."""
    digest = hashlib.blake2b(command_id.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") or 1


class BeginState(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


@dataclass(frozen=True)
class BeginResult:
    state: BeginState
    result: CommandResult | None = None  # set when state is DONE


@dataclass(frozen=True)
class ReplyTo:
    """Destination of the final result when the request named an MQTT 5 response topic."""

    topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class PendingCommand:
    """A command that started but has no final result, for example after a restart."""

    command_id: str
    body: CommandBody | None
    key_id: str | None
    unlock_token: int
    received_at: float
    reply: ReplyTo


class CommandStore:
    """The `commands` table in a `Storage` file."""

    def __init__(self, storage: Storage, *, settings: CommandSettings, clock: Clock) -> None:
        self._storage = storage
        self._settings = settings
        self._clock = clock
        storage.conn.executescript(_SCHEMA)

    def begin(
        self,
        command_id: str,
        body: CommandBody | None = None,
        key_id: str | None = None,
        reply: ReplyTo | None = None,
    ) -> BeginResult:
        """Record that a command starts, or report what happened to it before."""
        with self._storage.transaction(durable=True) as conn:
            row = conn.execute(
                "SELECT state, result FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()
            if row is not None:
                if row[0] == "done":
                    return BeginResult(BeginState.DONE, CommandResult.model_validate_json(row[1]))
                return BeginResult(BeginState.IN_PROGRESS)
            conn.execute(
                "INSERT INTO commands (command_id, state, body, key_id, reply_topic,"
                " correlation_data, unlock_token, received_at)"
                " VALUES (?, 'in_progress', ?, ?, ?, ?, ?, ?)",
                (
                    command_id,
                    None if body is None else body.model_dump_json(),
                    key_id,
                    None if reply is None else reply.topic,
                    None if reply is None else reply.correlation_data,
                    unlock_token_for(command_id),
                    self._clock.wall(),
                ),
            )
        return BeginResult(BeginState.NEW)

    def lookup(self, command_id: str) -> BeginResult | None:
        """Return what is stored for a command id without recording anything."""
        rows = self._storage.query(
            "SELECT state, result FROM commands WHERE command_id = ?", (command_id,)
        )
        if not rows:
            return None
        if rows[0][0] == "done":
            return BeginResult(BeginState.DONE, CommandResult.model_validate_json(rows[0][1]))
        return BeginResult(BeginState.IN_PROGRESS)

    def finish(
        self,
        command_id: str,
        result: CommandResult,
        *,
        reply: ReplyTo | None = None,
        create: bool = False,
    ) -> None:
        """Store the final result. Joins an open transaction so the result can be queued with it.

        With `create`, a command that never started (a rejected request) is recorded as
        finished at once. Raises `UnknownCommandError` when the id was never started and
        `create` is false, and `ValueError` when the command already has a final result.
        """
        with self._storage.transaction(durable=True) as conn:
            row = conn.execute(
                "SELECT state FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()
            if row is None and create:
                self.begin(command_id, reply=reply)
                row = ("in_progress",)
            if row is None:
                raise UnknownCommandError(f"command {command_id!r} was never started")
            if row[0] == "done":
                raise ValueError(f"command {command_id!r} already has a final result")
            conn.execute(
                "UPDATE commands SET state = 'done', result = ?, finished_at = ?"
                " WHERE command_id = ?",
                (result.model_dump_json(), self._clock.wall(), command_id),
            )

    def reply_of(self, command_id: str) -> ReplyTo:
        rows = self._storage.query(
            "SELECT reply_topic, correlation_data FROM commands WHERE command_id = ?",
            (command_id,),
        )
        if not rows:
            raise UnknownCommandError(f"command {command_id!r} was never started")
        return ReplyTo(rows[0][0], None if rows[0][1] is None else bytes(rows[0][1]))

    def result_of(self, command_id: str) -> CommandResult | None:
        rows = self._storage.query(
            "SELECT result FROM commands WHERE command_id = ? AND state = 'done'", (command_id,)
        )
        return CommandResult.model_validate_json(rows[0][0]) if rows else None

    def in_progress(self) -> list[PendingCommand]:
        """Return commands without a final result, oldest first."""
        rows = self._storage.query(
            "SELECT command_id, body, key_id, unlock_token, received_at, reply_topic,"
            " correlation_data FROM commands WHERE state = 'in_progress' ORDER BY received_at"
        )
        return [
            PendingCommand(
                command_id=row[0],
                body=None if row[1] is None else CommandBody.model_validate_json(row[1]),
                key_id=row[2],
                unlock_token=row[3],
                received_at=row[4],
                reply=ReplyTo(row[5], None if row[6] is None else bytes(row[6])),
            )
            for row in rows
        ]

    def prune(self) -> int:
        """Delete finished commands past the retention time or beyond the count limit."""
        cutoff = self._clock.wall() - self._settings.retention_s
        with self._storage.transaction(durable=False) as conn:
            deleted = conn.execute(
                "DELETE FROM commands WHERE state = 'done' AND finished_at < ?", (cutoff,)
            ).rowcount
            # The count limit never removes a result whose command could still be redelivered
            # before its deadline.
            deleted += conn.execute(
                "DELETE FROM commands WHERE state = 'done' AND finished_at < ? AND command_id"
                " NOT IN (SELECT command_id FROM commands WHERE state = 'done'"
                " ORDER BY finished_at DESC LIMIT ?)",
                (
                    self._clock.wall() - 2 * self._settings.max_lifetime_s,
                    self._settings.max_stored,
                ),
            ).rowcount
        if deleted:
            logger.info("pruned %d finished commands", deleted)
        return deleted
