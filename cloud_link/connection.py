"""The MQTT connection of the cloud link: connect, serve, reconnect.

Each connection resubscribes, publishes the retained `online` status and requests a fresh
birth, then runs the receiver and the outbox publisher until the connection fails or a stop
is requested. Reconnects use capped exponential backoff with jitter; disconnects right after
CONNACK count as flaps and lead to the long backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable
from typing import Literal

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes

from cloud_link.backoff import Backoff, FlapDetector
from cloud_link.clock import Clock, wall_datetime
from cloud_link.config import CloudConfig
from cloud_link.errors import CloudConfigError
from cloud_link.intake import ReceivedPayload
from cloud_link.messages import LinkStatus, timestamp
from cloud_link.mqtt_client import RC_FIRST_ERROR, LinkClient, new_properties, reason_value
from cloud_link.outbox import Outbox
from cloud_link.publisher import Publisher
from cloud_link.tls import LinkTlsContext, is_certificate_alert, is_certificate_error
from cloud_link.topics import Topics

logger = logging.getLogger(__name__)


class _StopServing(Exception):
    """Ends the per-connection task group after a requested shutdown."""


MAX_RECEIVED_PACKET_BYTES = 256 * 1024
"""Largest packet the broker may send to the gateway (MQTT 5 Maximum Packet Size).

The broker drops a bigger command instead of sending it, so a huge payload never fills
the cabinet's memory. A payload between `commands.max_payload_bytes` and this size still
arrives and gets a `too_large` rejection.
"""
PACKET_HEADROOM_BYTES = 4096
"""Room for the topic, properties and header of a packet next to its payload."""


class Connection:
    """Keeps one MQTT connection to the broker up until `stop` is set."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        topics: Topics,
        clock: Clock,
        tls_context: LinkTlsContext | None,
        publisher: Publisher,
        outbox: Outbox,
        on_command: Callable[[ReceivedPayload], None],
        on_online: Callable[[], None],
        changed: asyncio.Event,
        stop: asyncio.Event,
    ) -> None:
        self.config = config
        self.topics = topics
        self._clock = clock
        self._tls_context = tls_context
        self._publisher = publisher
        self._outbox = outbox
        self._on_command = on_command
        self._on_online = on_online
        self._changed = changed
        self._stop = stop
        self._mqtt5 = config.mqtt_version == "5"
        self._connected = asyncio.Event()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self.flaps = FlapDetector(config.flap_window_s, config.flap_limit)
        self.connects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.connected_since: float | None = None  # monotonic time of the current CONNACK
        self.connected_since_wall: float | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self) -> None:
        """Connect and reconnect until `stop` is set; raises `CloudConfigError` when fatal."""
        while not self._stop.is_set():
            await self._connect_once()
            if not self._stop.is_set():
                await self._pause_before_reconnect()

    async def _connect_once(self) -> None:
        client = self._make_client()
        client.on_delivery = functools.partial(self._deliver, client)
        connected_at: float | None = None
        try:
            async with client:
                connected_at = self._clock.monotonic()
                self.connected_since = connected_at
                self.connected_since_wall = self._clock.wall()
                await self._serve(client)
        except aiomqtt.MqttError as exc:
            self._check_fatal(client, exc)
            logger.warning(
                "MQTT connection to %s:%d failed: %s", self.config.host, self.config.port, exc
            )
        finally:
            self._connected.clear()
            self.connected_since = self.connected_since_wall = None
            client.forget_disconnect_error()
        if connected_at is None:
            self.connect_failures += 1
        else:
            self.disconnects += 1
            self._after_connection(self._clock.monotonic() - connected_at)
        self._changed.set()

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
        await self._publisher.run(client, self.ack_timeout_s())

    async def _on_connect(self, client: LinkClient) -> None:
        """Resubscribe, mark the cabinet online and queue a fresh birth."""
        self.connects += 1
        granted = await client.subscribe(self.topics.command, qos=1, timeout=self.ack_timeout_s())
        if any(reason_value(code) >= RC_FIRST_ERROR for code in granted):
            logger.error(
                "broker rejected the subscription to %s (%s); no commands can arrive",
                self.topics.command,
                granted,
            )
        code = await client.publish_acked(
            self.topics.status,
            self._status_payload("online"),
            qos=1,
            retain=True,
            ack_timeout_s=self.ack_timeout_s(),
        )
        if code >= RC_FIRST_ERROR:
            logger.error(
                "broker rejected the online status on %s: 0x%02x", self.topics.status, code
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
        self._on_online()

    async def _receive(self, client: LinkClient) -> None:
        """Wait until the connection ends, then raise MqttError.

        Messages do not pass through here: paho hands each one to `_deliver` as it reads it,
        from the connect on, so that messages of the persistent session sent right after
        the CONNACK are taken too.
        """
        await client.wait_disconnected()

    def _deliver(self, client: LinkClient, message: mqtt.MQTTMessage) -> None:
        """Pass a command-topic message to `on_command`; runs in paho's read callback."""
        if not aiomqtt.Topic(message.topic).matches(self.topics.command):
            client.acknowledge(message.mid, message.qos)
            return
        acknowledge = functools.partial(client.acknowledge, message.mid, message.qos)
        self._on_command(self._received_payload(message, acknowledge))

    def _received_payload(
        self, message: mqtt.MQTTMessage, acknowledge: Callable[[], None]
    ) -> ReceivedPayload:
        properties = getattr(message, "properties", None)
        expiry = response_topic = correlation = None
        if properties is not None:
            expiry = getattr(properties, "MessageExpiryInterval", None)
            response_topic = getattr(properties, "ResponseTopic", None)
            correlation = getattr(properties, "CorrelationData", None)
        return ReceivedPayload(
            payload=bytes(message.payload),
            received_monotonic=self._clock.monotonic(),
            received_wall=self._clock.wall(),
            message_expiry_s=expiry,
            response_topic=response_topic,
            correlation_data=correlation,
            acknowledge=acknowledge,
        )

    async def _stop_when_requested(self, client: LinkClient) -> None:
        await self._stop.wait()
        try:
            async with asyncio.timeout(self.config.shutdown_flush_s):
                await self._publisher.wait_idle()
        except TimeoutError:
            logger.warning(
                "shutdown: %d messages still in the outbox", self._outbox.stats().pending
            )
        await client.publish_acked(
            self.topics.status,
            self._status_payload("offline", reason="shutdown"),
            qos=1,
            retain=True,
            ack_timeout_s=self.ack_timeout_s(),
        )
        raise _StopServing

    def _after_connection(self, connected_for_s: float) -> None:
        self.flaps.connection_ended(connected_for_s)
        if not self.flaps.consecutive:
            self._backoff.reset()

    async def _pause_before_reconnect(self) -> None:
        if self.flaps.flapping:
            delay = self.config.reconnect_max_s
            logger.error(
                "disconnected %d times within %.0f s of CONNACK; another client may be using "
                "client id %r. Waiting %.1f s",
                self.flaps.consecutive,
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
            connect_properties.MaximumPacketSize = max(
                MAX_RECEIVED_PACKET_BYTES, config.commands.max_payload_bytes + PACKET_HEADROOM_BYTES
            )
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

    def ack_timeout_s(self) -> float:
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
