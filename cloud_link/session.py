"""`CloudLink`: the MQTT session, the outbox and the command path behind one object.

The gateway creates one `CloudLink`, runs `run()` in its task group, queues messages with
`send()` and executes commands in the handler it passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from pydantic import BaseModel

from cloud_link.backoff import Backoff, FlapDetector
from cloud_link.clock import Clock, SystemClock, wall_datetime
from cloud_link.command_store import CommandStore, PendingCommand, ReplyTo
from cloud_link.commands import CommandOutcome
from cloud_link.config import CloudConfig
from cloud_link.dispatcher import CommandDispatcher, CommandHandler, DispatcherCounters
from cloud_link.errors import CloudConfigError, SigningError
from cloud_link.intake import CommandIntake, ReceivedPayload
from cloud_link.messages import (
    BatteryHealth,
    Birth,
    CommandResult,
    EjectOutcomeEvent,
    FaultEvent,
    Heartbeat,
    LinkStatus,
    LowStockEvent,
    OutboxStats,
    ReturnEvent,
    SecurityEvent,
    StateChange,
    timestamp,
)
from cloud_link.mqtt_client import LinkClient, new_properties
from cloud_link.outbox import Outbox
from cloud_link.publisher import Publisher, PublisherCounters
from cloud_link.signing import load_trusted_keys
from cloud_link.storage import Storage
from cloud_link.tls import build_tls_context, is_certificate_alert, is_certificate_error
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
    outbox: OutboxStats
    publisher: PublisherCounters
    commands: DispatcherCounters


class _StopServing(Exception):
    """Ends the per-connection task group after a requested shutdown."""


class CloudLink:
    """One cabinet's connection to the cloud."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        state_dir: Path,
        handler: CommandHandler,
        birth_provider: BirthProvider,
        clock: Clock | None = None,
    ) -> None:
        """Open the state database and load keys and TLS files.

        Raises `CloudConfigError` when a trusted key or a TLS file cannot be loaded.
        """
        self.config = config
        self.topics = Topics(config.topic_prefix, config.cabinet_id)
        self._clock = clock or SystemClock.from_settings(config.commands)
        self._birth_provider = birth_provider
        self._mqtt5 = config.mqtt_version == "5"
        self._tls_context = build_tls_context(config.tls)
        try:
            keys = load_trusted_keys(config.commands.trusted_keys)
        except SigningError as exc:
            raise CloudConfigError(str(exc)) from exc

        self._storage = Storage(state_dir / DATABASE_NAME)
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
            on_settled=self._changed.set,
        )
        intake = CommandIntake(
            cabinet_id=config.cabinet_id,
            settings=config.commands,
            trusted_keys=keys,
            clock=self._clock,
        )
        self._dispatcher = CommandDispatcher(
            intake=intake,
            store=self.commands,
            handler=handler,
            finish=self._finish_command,
            publish_result=self._queue_result,
            publish_security=self._send_security,
            rebirth=self.request_rebirth,
            clock=self._clock,
            rejections_per_minute=config.commands.max_rejections_per_minute,
        )
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._flaps = FlapDetector(config.flap_window_s, config.flap_limit)
        self._connects = 0
        self._connect_failures = 0
        self._disconnects = 0
        self._started_monotonic = self._clock.monotonic()

    # Lifecycle

    async def run(self) -> None:
        """Keep the session up until `stop()`; raises `CloudConfigError` on fatal errors."""
        self.commands.prune()
        try:
            async with asyncio.TaskGroup() as tasks:
                dispatcher = tasks.create_task(self._dispatcher.run(), name="cloud-commands")
                heartbeat = tasks.create_task(self._heartbeat_loop(), name="cloud-heartbeat")
                maintenance = tasks.create_task(self._maintenance_loop(), name="cloud-maintenance")
                await self._connection_loop()
                for task in (dispatcher, heartbeat, maintenance):
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

    def send(self, data: OutgoingData) -> int:
        """Commit a message to the outbox and return its sequence number.

        Raises `OutboxFullError` when a non-telemetry message does not fit.
        """
        seq = self.outbox.enqueue(
            data,
            topic=self._topic_of(data),
            offline=not self.connected,
            expiry_s=self._expiry_of(data),
        )
        self._publisher.wake()
        return seq

    def _send_security(self, event: SecurityEvent) -> None:
        self.send(event)

    def request_rebirth(self) -> None:
        """Queue a fresh birth from the birth provider."""
        try:
            birth = self._birth_provider()
        except Exception:
            logger.exception("birth provider failed; no birth published")
            return
        self.send(birth)

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
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_until(self, predicate: Callable[[LinkStats], bool]) -> LinkStats:
        """Wait until `predicate(stats())` holds; rechecked on connection changes and PUBACKs."""
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
        if self._flaps.consecutive > 0:
            return LinkState.DEGRADED
        return LinkState.ONLINE

    def stats(self) -> LinkStats:
        return LinkStats(
            link=self.link_state,
            connects=self._connects,
            connect_failures=self._connect_failures,
            disconnects=self._disconnects,
            flaps=self._flaps.total,
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

    # Connection

    async def _connection_loop(self) -> None:
        while not self._stop.is_set():
            client = self._make_client()
            connected_at: float | None = None
            try:
                async with client:
                    connected_at = self._clock.monotonic()
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self._check_fatal(client, exc)
                logger.warning(
                    "MQTT connection to %s:%d failed: %s", self.config.host, self.config.port, exc
                )
            finally:
                self._connected.clear()
                client.forget_disconnect_error()
            if connected_at is None:
                self._connect_failures += 1
            else:
                self._disconnects += 1
                self._after_connection(self._clock.monotonic() - connected_at)
            self._changed.set()
            if not self._stop.is_set():
                await self._pause_before_reconnect()

    async def _serve(self, client: LinkClient) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                # The receiver starts first: it notices a lost connection even while the
                # subscribe or the online publish is still waiting for its acknowledgement.
                tasks.create_task(self._receive(client), name="cloud-receiver")
                tasks.create_task(self._start_publishing(client), name="cloud-publisher")
                tasks.create_task(self._stop_when_requested(client), name="cloud-stop")
        except* _StopServing:
            logger.info("session stopped on request")
        except* aiomqtt.MqttError as group:
            # One connection failure ends the publisher and the receiver together.
            first = group.exceptions[0]
            raise aiomqtt.MqttError(f"connection lost: {first}") from first

    async def _start_publishing(self, client: LinkClient) -> None:
        await self._on_connect(client)
        await self._publisher.run(client, self._ack_timeout_s())

    async def _on_connect(self, client: LinkClient) -> None:
        """Resubscribe, mark the cabinet online and queue a fresh birth."""
        self._connects += 1
        await client.subscribe(self.topics.command, qos=1, timeout=self._ack_timeout_s())
        await client.publish_acked(
            self.topics.status,
            self._status_payload("online"),
            qos=1,
            retain=True,
            ack_timeout_s=self._ack_timeout_s(),
        )
        self._connected.set()
        self._changed.set()
        logger.info(
            "connected to %s:%d as %s (MQTT %s)",
            self.config.host,
            self.config.port,
            self.config.effective_client_id,
            self.config.mqtt_version,
        )
        self.request_rebirth()

    async def _receive(self, client: LinkClient) -> None:
        async for message in client.messages:
            if not message.topic.matches(self.topics.command):
                continue
            self._dispatcher.submit(self._received_payload(message))

    def _received_payload(self, message: aiomqtt.Message) -> ReceivedPayload:
        payload = message.payload
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        expiry = response_topic = correlation = None
        if message.properties is not None:
            expiry = getattr(message.properties, "MessageExpiryInterval", None)
            response_topic = getattr(message.properties, "ResponseTopic", None)
            correlation = getattr(message.properties, "CorrelationData", None)
        return ReceivedPayload(
            payload=bytes(raw),
            received_monotonic=self._clock.monotonic(),
            received_wall=self._clock.wall(),
            message_expiry_s=expiry,
            response_topic=response_topic,
            correlation_data=correlation,
        )

    async def _stop_when_requested(self, client: LinkClient) -> None:
        await self._stop.wait()
        try:
            async with asyncio.timeout(self.config.shutdown_flush_s):
                await self._publisher.wait_idle()
        except TimeoutError:
            logger.warning("shutdown: %d messages still in the outbox", self.outbox.stats().pending)
        await client.publish_acked(
            self.topics.status,
            self._status_payload("offline", reason="shutdown"),
            qos=1,
            retain=True,
            ack_timeout_s=self._ack_timeout_s(),
        )
        raise _StopServing

    def _after_connection(self, connected_for_s: float) -> None:
        self._flaps.connection_ended(connected_for_s)
        if not self._flaps.consecutive:
            self._backoff.reset()

    async def _pause_before_reconnect(self) -> None:
        if self._flaps.flapping:
            delay = self.config.reconnect_max_s
            logger.error(
                "disconnected %d times within %.0f s of CONNACK; another client may be using "
                "client id %r. Waiting %.1f s",
                self._flaps.consecutive,
                self.config.flap_window_s,
                self.config.effective_client_id,
                delay,
            )
        else:
            delay = self._backoff.next_delay()
            logger.info("reconnecting in %.1f s", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _check_fatal(self, client: LinkClient, exc: aiomqtt.MqttError) -> None:
        failure = client.certificate_error
        if failure is not None and is_certificate_error(failure):
            raise CloudConfigError(f"TLS certificate rejected: {failure}") from exc
        alert = client.tls_alert
        if alert is not None and is_certificate_alert(alert):
            raise CloudConfigError(f"broker rejected the client certificate: {alert}") from exc

    def _make_client(self) -> LinkClient:
        config = self.config
        will_properties = connect_properties = None
        if self._mqtt5:
            will_properties = new_properties(PacketTypes.WILLMESSAGE)
            will_properties.WillDelayInterval = config.will_delay_s
            connect_properties = new_properties(PacketTypes.CONNECT)
            connect_properties.SessionExpiryInterval = config.session_expiry_s
        return LinkClient(
            config.host,
            config.port,
            identifier=config.effective_client_id,
            username=config.username,
            password=None if config.password is None else config.password.get_secret_value(),
            protocol=aiomqtt.ProtocolVersion.V5 if self._mqtt5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(
                self.topics.status,
                self._status_payload("offline", reason="connection_lost"),
                qos=1,
                retain=True,
                properties=will_properties,
            ),
            clean_session=None if self._mqtt5 else False,
            clean_start=False if self._mqtt5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=config.keepalive_s,
            timeout=config.connect_timeout_s,
            properties=connect_properties,
            tls_context=self._tls_context,
            max_inflight_messages=config.outbox.max_in_flight + 4,
            # Each MQTT packet is written whole; Nagle would only delay PUBACKs and results.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    def _ack_timeout_s(self) -> float:
        return max(10.0, self.config.keepalive_s * 1.5)

    def _status_payload(
        self,
        state: Literal["online", "offline"],
        *,
        reason: Literal["shutdown", "connection_lost"] | None = None,
    ) -> bytes:
        status = LinkStatus(
            cabinet_id=self.config.cabinet_id,
            state=state,
            ts=timestamp(wall_datetime(self._clock)),
            reason=reason,
        )
        return status.model_dump_json().encode()

    # Outbox helpers

    def _topic_of(self, data: BaseModel) -> str:
        if isinstance(data, Birth):
            return self.topics.birth
        if isinstance(data, StateChange):
            return self.topics.state
        if isinstance(data, BatteryHealth):
            return self.topics.battery
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
        # Results go only to topics under our own prefix, whatever a request names.
        if (
            topic
            and topic.startswith(self.config.topic_prefix + "/")
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

    def _finish_command(self, result: CommandResult, reply: ReplyTo | None) -> None:
        if result.command_id is None:
            raise ValueError("a final result needs a command id")
        with self._storage.transaction(durable=True):
            self.commands.finish(result.command_id, result)
            self._queue_result(result, reply)
        logger.info("command %s finished: %s", result.command_id, result.status)

    # Background loops

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            if self.connected:
                self.send_heartbeat()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            self.commands.prune()
            self._storage.checkpoint()
