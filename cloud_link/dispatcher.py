"""Turns command-topic payloads into exactly one final result each.

Valid commands run through the gateway handler in their own task. Invalid ones get a
rejection result without reaching it, plus a security event when authentication failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cloud_link.clock import Clock
from cloud_link.command_store import BeginState, CommandStore, ReplyTo, unlock_token_for
from cloud_link.commands import AcceptedCommand, CommandOutcome, EjectCommand, RebirthCommand
from cloud_link.intake import CommandIntake, CommandRejection, ReceivedPayload
from cloud_link.messages import (
    CommandRejectReason,
    CommandResult,
    CommandStatus,
    SecurityEvent,
    SecurityEventKind,
)

logger = logging.getLogger(__name__)

CommandHandler = Callable[[AcceptedCommand], Awaitable[CommandOutcome]]


class CommandNotice(Protocol):
    """Receiver of the news that an eject may be coming, so the gateway can ready the bus.

    The checks and the durable record of a command take a few milliseconds before the
    handler runs, and a poll of the bus started in that time delays the UNLOCK. Neither
    method may act on a command, because it may still be forged, expired or a duplicate.
    """

    def expect_eject(self) -> None:
        """Prepare for an eject: a payload that may contain one arrived, still unchecked."""

    def drop_expected_eject(self) -> None:
        """Stop preparing: the announced payloads contain no new eject."""


EJECT_HINT = b"eject"
"""Bytes that mark a payload as a possible eject command, announced before its checks.

A signed body is a JSON string inside the envelope, so its command type appears verbatim. A
payload that escapes the word gets no early hold, and its UNLOCK still goes before any
waiting poll.
"""
# `finish` stores a started command's final result and queues it in one transaction, and
# `record_rejection` does the same for an authenticated request that never started.
# `publish_result` only queues a result (unauthenticated rejections, stored results again).
ResultSink = Callable[[CommandResult, ReplyTo | None], None]

# Payloads wait in the queue only while `run` has not started or is working through earlier
# ones (see `submit`).
# NOTE: a payload arriving while this many wait is dropped without a result and counted in
# `queue_overflows`; the MQTT layer has already acknowledged it, so the cloud must retry.
QUEUE_LIMIT = 64

# Every rejected command is reported as a security event: a stale or malformed command is
# either an attack or a broken backend, and operators must see both.
SECURITY_OF_REASON: dict[CommandRejectReason, SecurityEventKind] = {
    CommandRejectReason.EXPIRED: SecurityEventKind.INVALID_DEADLINE,
    CommandRejectReason.DEADLINE_TOO_FAR: SecurityEventKind.INVALID_DEADLINE,
    CommandRejectReason.ISSUED_IN_FUTURE: SecurityEventKind.INVALID_DEADLINE,
    CommandRejectReason.NO_TRUSTED_DEADLINE: SecurityEventKind.INVALID_DEADLINE,
    CommandRejectReason.TOO_LARGE: SecurityEventKind.MALFORMED_COMMAND,
    CommandRejectReason.INVALID_UTF8: SecurityEventKind.MALFORMED_COMMAND,
    CommandRejectReason.INVALID_JSON: SecurityEventKind.MALFORMED_COMMAND,
    CommandRejectReason.TOO_DEEP: SecurityEventKind.MALFORMED_COMMAND,
    CommandRejectReason.INVALID_ENVELOPE: SecurityEventKind.MALFORMED_COMMAND,
    CommandRejectReason.INVALID_SCHEMA: SecurityEventKind.MALFORMED_COMMAND,
    CommandRejectReason.UNKNOWN_COMMAND: SecurityEventKind.MALFORMED_COMMAND,
}


@dataclass
class DispatcherCounters:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    handler_errors: int = 0
    queue_overflows: int = 0
    rejections_suppressed: int = 0


class RejectionLimiter:
    """Token bucket that bounds rejection results and security events under a flood."""

    def __init__(self, clock: Clock, per_minute: int) -> None:
        self._clock = clock
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._rate = per_minute / 60.0
        self._last = clock.monotonic()

    def allow(self) -> bool:
        now = self._clock.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _acknowledge(received: ReceivedPayload) -> None:
    if received.acknowledge is None:
        return
    try:
        received.acknowledge()
    except Exception:
        logger.exception("could not acknowledge a command message")


class CommandDispatcher:
    def __init__(
        self,
        *,
        intake: CommandIntake,
        store: CommandStore,
        handler: CommandHandler,
        notice: CommandNotice | None = None,
        finish: ResultSink,
        record_rejection: ResultSink,
        publish_result: ResultSink,
        publish_security: Callable[[SecurityEvent], None],
        rebirth: Callable[[], None],
        clock: Clock,
        rejections_per_minute: int,
    ) -> None:
        self._intake = intake
        self._store = store
        self._handler = handler
        self._notice = notice
        self._finish = finish
        self._record_rejection = record_rejection
        self._publish_result = publish_result
        self._publish_security = publish_security
        self._rebirth = rebirth
        self._clock = clock
        self._limiter = RejectionLimiter(clock, rejections_per_minute)
        self._queue: asyncio.Queue[tuple[ReceivedPayload, bool]] = asyncio.Queue(QUEUE_LIMIT)
        self._announced = 0  # queued payloads announced to the notice as possible ejects
        self._tasks: asyncio.TaskGroup | None = None  # handler tasks, while `run` runs
        self.counters = DispatcherCounters()

    def submit(self, received: ReceivedPayload) -> None:
        """Take a payload from the command topic: process it now, or queue it behind others.

        The MQTT layer calls this as it reads the payload. With nothing queued and `run`
        running, the checks, the durable record and the PUBACK happen in this call, so an
        eject's handler starts in the next turn of the event loop, whatever else is ready
        then. A payload that arrives while others wait is queued, which keeps their order.
        """
        self.counters.received += 1
        announced = (
            self._notice is not None
            and EJECT_HINT in received.payload
            and self._call_notice(self._notice.expect_eject)
        )
        if self._tasks is not None and self._queue.empty():
            self._process(received, announced, self._tasks)
            return
        try:
            self._queue.put_nowait((received, announced))
        except asyncio.QueueFull:
            self.counters.queue_overflows += 1
            logger.warning("command queue full; dropped a %d-byte payload", len(received.payload))
            # Acknowledged although dropped: unacknowledged messages count against the
            # broker's in-flight window, and a full window would stop every later command.
            _acknowledge(received)
            self._settle_announcement(announced, ejecting=False)
            return
        self._announced += int(announced)

    async def run(self) -> None:
        """Process queued payloads until cancelled; handler tasks are cancelled with it."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                while True:
                    received, announced = await self._queue.get()
                    self._announced -= int(announced)
                    self._process(received, announced, tasks)
            finally:
                self._tasks = None

    def _process(
        self, received: ReceivedPayload, announced: bool, tasks: asyncio.TaskGroup
    ) -> None:
        """Dispatch one payload, then send its PUBACK unless the dispatch failed."""
        ejecting = False
        try:
            ejecting = self._dispatch(received, tasks)
        except Exception:
            # Without a PUBACK the broker sends the payload again after the next reconnect,
            # so a failed write to the store (a full or failing disk) loses no command.
            # NOTE: nothing forces that reconnect, so the command waits for the next one.
            logger.exception(
                "failed to dispatch a %d-byte command payload; left unacknowledged, so the "
                "broker sends it again after the next reconnect",
                len(received.payload),
            )
            self._settle_announcement(announced, ejecting=False)
            return
        # The PUBACK goes out only now, after the command was stored (or its rejection was
        # queued), so a gateway killed before this gets the command again from the broker's
        # session instead of losing it.
        _acknowledge(received)
        self._settle_announcement(announced, ejecting=ejecting)

    @staticmethod
    def _call_notice(method: Callable[[], None]) -> bool:
        """Call a method of the notice; return False when it raised."""
        try:
            method()
        except Exception:
            logger.exception("command notice failed; going on")
            return False
        return True

    def _settle_announcement(self, announced: bool, *, ejecting: bool) -> None:
        """Withdraw an announced eject that did not come, unless another announced payload
        still waits in the queue."""
        if announced and not ejecting and not self._announced and self._notice is not None:
            self._call_notice(self._notice.drop_expected_eject)

    def _dispatch(self, received: ReceivedPayload, tasks: asyncio.TaskGroup) -> bool:
        """Check, record and start one payload's command; return True for a new eject."""
        reply = ReplyTo(received.response_topic, received.correlation_data)
        verdict = self._intake.check(received)
        if isinstance(verdict, CommandRejection):
            self._reject(verdict, reply)
            return False

        body = verdict.body
        begin = self._store.begin(body.command_id, body, verdict.key_id, reply)
        if begin.state is not BeginState.NEW:
            self._duplicate(body.command_id, begin.state, begin.result, reply)
            return False

        self.counters.accepted += 1
        logger.info(
            "command %s (%s) accepted, key %s", body.command_id, body.command.type, verdict.key_id
        )
        if isinstance(body.command, RebirthCommand):
            self._rebirth()
            self._finish(
                CommandResult(
                    command_id=body.command_id, command="rebirth", status=CommandStatus.SUCCEEDED
                ),
                reply,
            )
            return False
        accepted = AcceptedCommand(
            command_id=body.command_id,
            command=body.command,
            key_id=verdict.key_id,
            received_monotonic=received.received_monotonic,
            deadline_monotonic=verdict.deadline_monotonic,
            unlock_token=unlock_token_for(body.command_id),
        )
        tasks.create_task(self._execute(accepted, reply), name=f"command-{body.command_id}")
        return isinstance(body.command, EjectCommand)

    async def _execute(self, accepted: AcceptedCommand, reply: ReplyTo) -> None:
        command_id = accepted.command_id
        try:
            outcome = await self._handler(accepted)
            result = outcome.to_result(command_id, accepted.command.type)
        except Exception as exc:
            # A failing handler still gets a final result published, so no command stays open.
            self.counters.handler_errors += 1
            logger.exception("handler failed on command %s", command_id)
            result = CommandResult(
                command_id=command_id,
                command=accepted.command.type,
                status=CommandStatus.FAILED,
                reject_reason=CommandRejectReason.EXECUTION_ERROR,
                detail=f"handler error: {type(exc).__name__}: {exc}"[:300],
            )
        try:
            self._finish(result, reply)
        except Exception:
            # The command stays in progress in the store, so the gateway resolves it from
            # `pending_commands()` after a restart.
            logger.exception("could not store the result of command %s", command_id)

    def _reject(self, rejection: CommandRejection, reply: ReplyTo) -> None:
        self.counters.rejected += 1
        logger.warning(
            "rejected command %s: %s (%s)",
            rejection.command_id or "<no id>",
            rejection.reason,
            rejection.detail,
        )
        result = CommandResult(
            command_id=rejection.command_id if rejection.authenticated else None,
            command=rejection.command,
            status=CommandStatus.REJECTED,
            reject_reason=rejection.reason,
            detail=rejection.detail[:300],
        )
        if rejection.authenticated and rejection.command_id is not None:
            known = self._store.lookup(rejection.command_id)
            if known is not None:
                self._duplicate(rejection.command_id, known.state, known.result, reply)
                return
            self._record_rejection(result, reply)
            self._report_security(rejection)
            return

        if not self._limiter.allow():
            self.counters.rejections_suppressed += 1
            return
        self._publish_result(result, reply)
        self._report_security(rejection)

    def _report_security(self, rejection: CommandRejection) -> None:
        kind = rejection.security or SECURITY_OF_REASON.get(rejection.reason)
        if kind is None:
            return
        self._publish_security(
            SecurityEvent(
                event=kind,
                command_id=rejection.command_id,
                key_id=(rejection.key_id or "")[:64] or None,
                detail=rejection.detail[:200],
            )
        )

    def _duplicate(
        self,
        command_id: str,
        state: BeginState,
        stored: CommandResult | None,
        reply: ReplyTo,
    ) -> None:
        self.counters.duplicates += 1
        if state is BeginState.IN_PROGRESS or stored is None:
            logger.info("command %s is still running; duplicate ignored", command_id)
            return
        logger.info("command %s already finished; publishing the stored result again", command_id)
        self._publish_result(stored, reply)
