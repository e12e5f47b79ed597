"""An aiomqtt client that reports PUBACK reason codes and TLS certificate failures.

aiomqtt 2.x drops the PUBACK reason code, which the outbox needs to tell "accepted",
"no matching subscribers" and "rejected" apart. This subclass hooks the paho callbacks.
It also writes queued packets once per event loop pass instead of through a writer
callback registered from any thread, and hands each received message to `on_delivery` in
paho's read callback instead of aiomqtt's queue.
NOTE: it relies on aiomqtt 2.x internals (`_client`, `_loop`, `_disconnected`,
`_on_publish`, `_on_message`, `_on_socket_register_write`, `_client_connect`, `_wait_for`);
pyproject pins aiomqtt below 3.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_link.tls import LinkTlsContext

T = TypeVar("T")

logger = logging.getLogger(__name__)

# MQTT 5 reason codes used by the outbox.
RC_SUCCESS = 0x00
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_FIRST_ERROR = 0x80
# MQTT 5: a broker that announces no Receive Maximum accepts 65535 unacknowledged publishes.
DEFAULT_RECEIVE_MAXIMUM = 65535


def new_properties(packet_type: int) -> Properties:
    """Return empty MQTT 5 properties for one packet type (paho's constructor is untyped)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def reason_value(code: int | ReasonCode) -> int:
    """Return a SUBACK entry as a number: a granted QoS, or a reason code of 0x80 and above."""
    return code if isinstance(code, int) else int(code.value)


class PackedProperties(Properties):
    """MQTT 5 properties that are packed once and reused until one of them changes.

    paho packs the properties of every PUBLISH again, which took about half the CPU time of
    `publish()` in a cProfile run of the outbox drain. The publisher shares one object
    among rows, so the packed bytes are kept here.
    """

    def __init__(self, packet_type: int) -> None:
        super().__init__(packet_type)  # type: ignore[no-untyped-call]

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)  # type: ignore[no-untyped-call]
        object.__setattr__(self, "_packed", None)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        object.__setattr__(self, "_packed", None)

    def pack(self) -> bytes:
        packed: bytes | None = getattr(self, "_packed", None)
        if packed is None:
            packed = bytes(super().pack())  # type: ignore[no-untyped-call]
            object.__setattr__(self, "_packed", packed)
        return packed


class PendingPuback(NamedTuple):
    """A QoS 1 publish handed to paho, and the future of its PUBACK reason code."""

    mid: int
    future: asyncio.Future[int]


class PublishFailedError(aiomqtt.MqttError):
    """paho refused to send a message, for example because it exceeds the packet size."""

    def __init__(self, rc: int) -> None:
        super().__init__(f"publish refused by the MQTT client: {mqtt.error_string(rc)}")
        self.rc = rc


class LinkClient(aiomqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls_context = kwargs.get("tls_context")
        # A TLS alert the broker sent, for example when it rejects the client certificate.
        # Under TLS 1.3 it arrives after the handshake, so paho only logs it. The log hook
        # is installed only with TLS, because paho formats every log line for such a hook,
        # two per QoS 1 message.
        self.tls_alert: str | None = None
        if self._tls_context is not None:
            self._client.on_log = self._record_tls_alert
        self._acks: dict[int, asyncio.Future[int]] = {}
        # Received QoS 1 messages are acknowledged by `acknowledge` after the gateway stored
        # them. Otherwise paho sends the PUBACK before the application sees the message.
        self._client.manual_ack_set(True)
        self.certificate_error: ssl.SSLError | None = None
        # Limits the broker announced in its MQTT 5 CONNACK.
        self.max_packet_size: int | None = None
        self.receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
        self._write_scheduled = False
        self.on_delivery: Callable[[mqtt.MQTTMessage], None] | None = None
        """Takes each received message in paho's read callback instead of aiomqtt's queue."""

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # aiomqtt's queue and its iterator pass a message through three loop passes before
        # the application gets it, and anything else ready runs in between. An eject command
        # reserves the slot bus in its first step, so it is handed over here, as it is read.
        deliver = self.on_delivery
        if deliver is None:
            super()._on_message(client, userdata, message)
            return
        try:
            deliver(message)
        except Exception:
            # An exception would end paho's read and, through aiomqtt, the connection.
            logger.exception("failed to take a message on %s", message.topic)

    async def wait_disconnected(self) -> None:
        """Wait until the connection ends; raise aiomqtt.MqttError then."""
        try:
            await asyncio.shield(self._disconnected)
        except Exception as exc:
            raise aiomqtt.MqttError(f"disconnected: {exc}") from exc
        raise aiomqtt.MqttError("disconnected")

    def acknowledge(self, mid: int, qos: int) -> None:
        """Send the PUBACK of a received message; nothing for QoS 0 or a lost connection.

        A message left unacknowledged when the connection drops is sent again by the broker
        after the reconnect, because the session persists.
        """
        if qos > 0:
            self._client.ack(mid, qos)

    async def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        ack_timeout_s: float,
    ) -> int:
        """Publish and return the PUBACK reason code (0 for QoS 0 and for MQTT 3.1.1)."""
        pending = self.publish_nowait(topic, payload, qos=qos, retain=retain, properties=properties)
        try:
            # Not asyncio.wait_for: in Python 3.11 it returns the result instead of raising
            # CancelledError when the PUBACK and a cancellation arrive in the same loop pass.
            # The cancelled task then goes on as if it was never cancelled.
            async with asyncio.timeout(ack_timeout_s):
                return await pending.future
        except TimeoutError as exc:
            raise aiomqtt.MqttError(
                f"no PUBACK for message id {pending.mid} within {ack_timeout_s} s"
            ) from exc
        finally:
            self._acks.pop(pending.mid, None)

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
        """Wait for an aiomqtt operation (connect, subscribe, unsubscribe) within `timeout`.

        Replaces aiomqtt's version, which uses `asyncio.wait_for`: in Python 3.11 that returns
        the result instead of raising CancelledError when both arrive in the same loop pass,
        so a session being torn down could wait on as if never cancelled.
        """
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(None if limit == math.inf else limit):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> PendingPuback:
        """Hand a message to paho; the future gets the PUBACK reason code.

        The future is already done for QoS 0. It fails with `aiomqtt.MqttError` when the
        connection is lost first. It has no timeout, so the caller applies one. Raises
        `aiomqtt.MqttCodeError` when not connected and `PublishFailedError` when paho
        refuses the message.
        """
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if info.rc in (mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
                raise aiomqtt.MqttCodeError(info.rc, "not connected")
            raise PublishFailedError(info.rc)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if qos == 0:
            future.set_result(RC_SUCCESS)
        else:
            self._acks[info.mid] = future
        return PendingPuback(info.mid, future)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        super()._on_publish(client, userdata, mid, reason_code, properties)
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(int(reason_code.value))

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if properties is not None:
            self.max_packet_size = getattr(properties, "MaximumPacketSize", None)
            self.receive_maximum = getattr(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        if not self._connected.done():
            # aiomqtt would wait for its timeout; a connection closed before CONNACK fails now.
            self._connected.set_exception(
                aiomqtt.MqttError(f"connection closed before CONNACK: {reason_code}")
            )
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(aiomqtt.MqttError("disconnected before PUBACK"))

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # aiomqtt registers a writer through call_soon_threadsafe, because paho may call this
        # from the connect thread. On the event loop thread, one write after the current
        # pass sends every packet queued in it, without a wake-up of the loop or a writer.
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            super()._on_socket_register_write(client, userdata, sock)
            return
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_queued)

    def _write_queued(self) -> None:
        self._write_scheduled = False
        try:
            self._client.loop_write()
        except Exception as exc:
            # A failed write means that the connection broke, as in aiomqtt's own writer.
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        sock = self._client.socket()
        if sock is not None and self._client.want_write():
            # The socket took only part of the data, so wait until it is writable again.
            super()._on_socket_register_write(self._client, None, sock)

    def forget_disconnect_error(self) -> None:
        """Mark aiomqtt's disconnect error as retrieved; the session logged the loss already.

        Without this, asyncio logs "Future exception was never retrieved" for every loss.
        """
        future = self._disconnected
        if future.done() and not future.cancelled():
            future.exception()

    # NOTE: paho 2.x reports a TLS alert received after the handshake only in its log, so
    # this matches the log text ("[SSL: ...ALERT...]"); another paho version may word it apart.
    def _record_tls_alert(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        if "ALERT" in text.upper() and "SSL" in text.upper():
            self.tls_alert = text

    def _client_connect(self) -> None:
        try:
            super()._client_connect()
        except OSError as exc:
            if isinstance(exc, ssl.SSLError):
                self.certificate_error = exc
            if isinstance(self._tls_context, LinkTlsContext):
                self._tls_context.close_last_socket()
            raise
