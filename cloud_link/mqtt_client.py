"""An aiomqtt client that reports PUBACK reason codes and TLS certificate failures.

aiomqtt 2.x drops the PUBACK reason code, which the outbox needs to tell "accepted",
"no matching subscribers" and "rejected" apart. This subclass hooks the paho callbacks.
NOTE: it relies on aiomqtt 2.x internals (`_client`, `_on_publish`, `_client_connect`);
pyproject pins aiomqtt below 3.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_link.tls import LinkTlsContext

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
        self.certificate_error: ssl.SSLError | None = None
        # Limits the broker announced in its MQTT 5 CONNACK.
        self.max_packet_size: int | None = None
        self.receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM

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
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if info.rc in (mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
                raise aiomqtt.MqttCodeError(info.rc, "not connected")
            raise PublishFailedError(info.rc)
        if qos == 0:
            return RC_SUCCESS
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        try:
            return await asyncio.wait_for(future, ack_timeout_s)
        except TimeoutError as exc:
            raise aiomqtt.MqttError(
                f"no PUBACK for message id {info.mid} within {ack_timeout_s} s"
            ) from exc
        finally:
            self._acks.pop(info.mid, None)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        super()._on_publish(client, userdata, mid, reason_code, properties)
        future = self._acks.get(mid)
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
        for future in self._acks.values():
            if not future.done():
                future.set_exception(aiomqtt.MqttError("disconnected before PUBACK"))

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
