"""`CloudLink`: the MQTT session, the outbox and the command path behind one object.

The gateway creates one `CloudLink`, runs `run()` in its task group, queues messages with
`send()` and executes commands in the handler it passes in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel

from cloud_link.clock import Clock, SystemClock
from cloud_link.command_store import CommandStore, PendingCommand, ReplyTo
from cloud_link.commands import CommandOutcome
from cloud_link.config import CloudConfig
from cloud_link.connection import Connection
from cloud_link.dispatcher import (
    CommandDispatcher,
    CommandHandler,
    CommandNotice,
    DispatcherCounters,
)
from cloud_link.errors import CloudConfigError, SigningError
from cloud_link.intake import CommandIntake
from cloud_link.messages import (
    BatteryHealth,
    Birth,
    CommandResult,
    EjectOutcomeEvent,
    FaultEvent,
    Heartbeat,
    LowStockEvent,
    OutboxStats,
    ReturnEvent,
    SecurityEvent,
    StateChange,
    StockReport,
)
from cloud_link.outbox import Outbox
from cloud_link.publisher import Publisher, PublisherCounters
from cloud_link.signing import load_trusted_keys
from cloud_link.storage import Storage, checkpoint_in_background
from cloud_link.tls import build_tls_context
from cloud_link.topics import Topics
from protocol.cabinet import LinkState

logger = logging.getLogger(__name__)

OutgoingData = (
    StateChange
    | EjectOutcomeEvent
    | ReturnEvent
    | FaultEvent
    | SecurityEvent
    | LowStockEvent
    | StockReport
    | BatteryHealth
    | Heartbeat
    | Birth
)
BirthProvider = Callable[[], Birth]

DATABASE_NAME = "cloud_link.sqlite"
MAINTENANCE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class LinkStats:
    link: LinkState
    connects: int
    connect_failures: int
    disconnects: int
    flaps: int
    in_flight: int
    outbox: OutboxStats
    publisher: PublisherCounters
    commands: DispatcherCounters


class CloudLink:
    """One cabinet's connection to the cloud."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        database: Path,
        handler: CommandHandler,
        birth_provider: BirthProvider,
        clock: Clock | None = None,
        notice: CommandNotice | None = None,
    ) -> None:
        """Open the state database (`database`, an SQLite file) and load keys and TLS files.

        `notice` hears of each payload that may hold an eject as it arrives, before any
        check (see `CommandNotice`). Raises `CloudConfigError` when a trusted key or a TLS
        file cannot be loaded.
        """
        self.config = config
        self.topics = Topics(config.topic_prefix, config.cabinet_id)
        self._clock = clock or SystemClock.from_settings(config.commands)
        self._birth_provider = birth_provider
        self._mqtt5 = config.mqtt_version == "5"
        tls_context = build_tls_context(config.tls)
        try:
            keys = load_trusted_keys(config.commands.trusted_keys)
        except SigningError as exc:
            raise CloudConfigError(str(exc)) from exc

        self._storage = Storage(database)
        self.outbox = Outbox(
            self._storage, cabinet_id=config.cabinet_id, limits=config.outbox, clock=self._clock
        )
        self.commands = CommandStore(self._storage, settings=config.commands, clock=self._clock)
        self._changed = asyncio.Event()
        self._publisher = Publisher(
            self.outbox,
            limits=config.outbox,
            clock=self._clock,
            mqtt5=self._mqtt5,
            on_progress=self._changed.set,
        )
        self._dispatcher = self._build_dispatcher(handler, notice, keys)
        self._stop = asyncio.Event()
        self._connection = Connection(
            config,
            topics=self.topics,
            clock=self._clock,
            tls_context=tls_context,
            publisher=self._publisher,
            outbox=self.outbox,
            on_command=self._dispatcher.submit,
            on_online=self.request_rebirth,
            changed=self._changed,
            stop=self._stop,
        )
        self._started_monotonic = self._clock.monotonic()

    def _build_dispatcher(
        self,
        handler: CommandHandler,
        notice: CommandNotice | None,
        keys: dict[str, Ed25519PublicKey],
    ) -> CommandDispatcher:
        intake = CommandIntake(
            cabinet_id=self.config.cabinet_id,
            settings=self.config.commands,
            trusted_keys=keys,
            clock=self._clock,
        )
        return CommandDispatcher(
            intake=intake,
            store=self.commands,
            handler=handler,
            notice=notice,
            finish=self._finish_command,
            record_rejection=self._record_rejection,
            publish_result=self._queue_result,
            publish_security=self._send_security,
            rebirth=self.request_rebirth,
            clock=self._clock,
            rejections_per_minute=self.config.commands.max_rejections_per_minute,
        )

    # Lifecycle

    async def run(self) -> None:
        """Keep the session up until `stop()` returns it.

        Raises `CloudConfigError` on a fatal configuration error (certificates). A failure of
        the state database (`sqlite3.Error`) also ends it, because nothing can be queued.
        """
        self.commands.prune()
        self.outbox.prune_dead_letters()
        try:
            async with asyncio.TaskGroup() as tasks:
                dispatcher = tasks.create_task(self._dispatcher.run(), name="cloud-commands")
                heartbeat = tasks.create_task(self._heartbeat_loop(), name="cloud-heartbeat")
                maintenance = tasks.create_task(self._maintenance_loop(), name="cloud-maintenance")
                checkpoints = tasks.create_task(
                    checkpoint_in_background(self._storage.path), name="cloud-checkpoint"
                )
                await self._connection.run()
                for task in (dispatcher, heartbeat, maintenance, checkpoints):
                    task.cancel()
        except* CloudConfigError as group:
            # Callers handle one fatal error, not the task group around it.
            raise group.exceptions[0] from None

    def stop(self) -> None:
        """Ask `run()` to flush for up to `shutdown_flush_s`, publish offline and return."""
        self._stop.set()

    def close(self) -> None:
        """Close the state database; call after `run()` returned."""
        self._storage.close()

    # Outgoing messages

    def send(self, data: OutgoingData, *, dedupe_key: str | None = None) -> int:
        """Commit a message to the outbox and return its sequence number.

        A message with a `dedupe_key` that was committed before is not stored again; its
        first sequence number is returned. Raises `OutboxFullError` when a non-telemetry
        message does not fit.
        """
        seq = self.outbox.enqueue(
            data,
            topic=self._topic_of(data),
            offline=not self.connected,
            expiry_s=self._expiry_of(data),
            dedupe_key=dedupe_key,
        )
        self._publisher.wake()
        return seq

    def _send_security(self, event: SecurityEvent) -> None:
        self.send(event)

    def request_rebirth(self) -> None:
        """Queue a fresh birth from the birth provider; failures are logged, not raised."""
        try:
            self.send(self._birth_provider())
        except Exception:
            logger.exception("could not queue a birth")

    # Commands

    def pending_commands(self) -> list[PendingCommand]:
        """Return commands that started before a restart and have no final result yet.

        The gateway resolves each one (for example by asking the slot board with the same
        unlock token) and calls `complete_command` for it. A second call for the same command
        raises `ValueError`.
        """
        return self.commands.in_progress()

    def complete_command(self, command_id: str, command: str, outcome: CommandOutcome) -> None:
        """Store and queue the final result of a pending command."""
        result = outcome.to_result(command_id, command)
        self._finish_command(result, self.commands.reply_of(command_id))

    # Observation

    @property
    def connected(self) -> bool:
        return self._connection.connected

    async def wait_connected(self) -> None:
        await self._connection.wait_connected()

    async def wait_until(self, predicate: Callable[[LinkStats], bool]) -> LinkStats:
        """Wait until `predicate(stats())` holds; rechecked on connection changes and publishes."""
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            self._changed.clear()
            await self._changed.wait()

    @property
    def link_state(self) -> LinkState:
        if not self.connected:
            return LinkState.OFFLINE
        connection = self._connection
        since = connection.connected_since
        settled = since is not None and self._clock.monotonic() - since >= self.config.flap_window_s
        # Recent flaps make the link DEGRADED only until this connection outlasts the window.
        if connection.flaps.consecutive > 0 and not settled:
            return LinkState.DEGRADED
        return LinkState.ONLINE

    @property
    def connected_since(self) -> float | None:
        """Wall-clock time of the current connection's CONNACK, or None while disconnected."""
        return self._connection.connected_since_wall

    def stats(self) -> LinkStats:
        return LinkStats(
            link=self.link_state,
            connects=self._connection.connects,
            connect_failures=self._connection.connect_failures,
            disconnects=self._connection.disconnects,
            flaps=self._connection.flaps.total,
            in_flight=self._publisher.in_flight,
            outbox=self.outbox.stats(),
            publisher=self._publisher.counters,
            commands=self._dispatcher.counters,
        )

    def send_heartbeat(self) -> int:
        return self.send(
            Heartbeat(
                uptime_s=int(self._clock.monotonic() - self._started_monotonic),
                link=self.link_state,
                clock_synchronised=self._clock.wall_synchronised(),
                interval_s=max(1, int(self.config.heartbeat_interval_s)),
                outbox=self.outbox.stats(),
            )
        )

    # Outbox helpers

    def _topic_of(self, data: BaseModel) -> str:
        if isinstance(data, Birth):
            return self.topics.birth
        if isinstance(data, StateChange):
            return self.topics.state
        if isinstance(data, BatteryHealth):
            return self.topics.battery
        if isinstance(data, StockReport):
            return self.topics.stock
        if isinstance(data, Heartbeat):
            return self.topics.heartbeat
        if isinstance(data, CommandResult):
            return self.topics.command_result
        return self.topics.event(getattr(data, "kind", "unknown"))

    def _expiry_of(self, data: BaseModel) -> int | None:
        if isinstance(data, Heartbeat):
            return max(1, int(self.config.heartbeat_interval_s * 2))
        return None

    def _result_topic(self, reply: ReplyTo | None) -> str:
        topic = None if reply is None else reply.topic
        # Results go only to topics under our own prefix, whatever a request names, and never
        # to the command topic, where the gateway would read its own result as a command.
        if (
            topic
            and topic.startswith(self.config.topic_prefix + "/")
            and topic != self.topics.command
            and "#" not in topic
            and "+" not in topic
        ):
            return topic
        return self.topics.command_result

    def _queue_result(self, result: CommandResult, reply: ReplyTo | None) -> None:
        self.outbox.enqueue(
            result,
            topic=self._result_topic(reply),
            offline=not self.connected,
            correlation_data=None if reply is None else reply.correlation_data,
        )
        self._publisher.wake()

    def _finish_command(
        self, result: CommandResult, reply: ReplyTo | None, *, create: bool = False
    ) -> None:
        if result.command_id is None:
            raise ValueError("a final result needs a command id")
        with self._storage.transaction(durable=True):
            self.commands.finish(result.command_id, result, reply=reply, create=create)
            self._queue_result(result, reply)
        logger.info("command %s finished: %s", result.command_id, result.status)

    def _record_rejection(self, result: CommandResult, reply: ReplyTo | None) -> None:
        self._finish_command(result, reply, create=True)

    # Background loops

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            if not self.connected:
                continue
            try:
                self.send_heartbeat()
            except Exception:
                logger.exception("could not queue the heartbeat")

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            try:
                self.commands.prune()
                self.outbox.prune_dead_letters()
                self._storage.checkpoint()
            except Exception:
                logger.exception("state database maintenance failed")
