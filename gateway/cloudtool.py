"""A small scripted cloud: signs and sends commands, and reads a cabinet's messages.

Used by the demo and by `cabinet-gateway cloud` for backend engineers who want to drive a
(simulated) cabinet by hand. It speaks the documented MQTT contract only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from pydantic import ValidationError

from cloud_link import Topics, parse_message, sign_command
from cloud_link.commands import (
    EjectCommand,
    LockCommand,
    RebirthCommand,
    SelftestCommand,
    SlotDisableCommand,
    SlotEnableCommand,
)
from cloud_link.messages import AnyEnvelope
from cloud_link.mqtt_client import new_properties

logger = logging.getLogger(__name__)

RECONNECT_DELAY_S = 0.5
SESSION_EXPIRY_S = 600

AnyCommand = (
    EjectCommand
    | SlotDisableCommand
    | SlotEnableCommand
    | LockCommand
    | SelftestCommand
    | RebirthCommand
)


class BrokerUrlError(ValueError):
    pass


class BrokerUnreachableError(ConnectionError):
    pass


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse `mqtt://host:port` or `mqtts://host:port`."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BrokerUrlError(
                f"broker URL {url!r} is invalid; expected mqtt://HOST:PORT or mqtts://HOST:PORT"
            )
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    topic: str
    envelope: AnyEnvelope | None  # None for the status topic or an unparsable payload
    raw: bytes


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) and return its public key in base64."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(pem)
    return public_key_of(key)


def public_key_of(key: Ed25519PrivateKey) -> str:
    import base64

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the Ed25519 private key from {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} contains a {type(key).__name__}, not an Ed25519 private key")
    return key


class ScriptedCloud:
    """One MQTT client that watches a cabinet and sends it signed commands."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        cabinet_id: str,
        key: Ed25519PrivateKey | None,
        key_id: str,
        topic_prefix: str = "cabinets",
        mqtt_version: str = "3.1.1",
        ca_file: Path | None = None,
        on_message: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        self._broker = broker
        self.cabinet_id = cabinet_id
        self._key = key
        self._key_id = key_id
        self.topics = Topics(topic_prefix, cabinet_id)
        self._mqtt5 = mqtt_version == "5"
        self._ca_file = ca_file
        self.on_message = on_message
        self._client: aiomqtt.Client | None = None
        self._identifier = f"scripted-cloud-{uuid.uuid4().hex[:8]}"
        self.last_error: str | None = None
        self.subscribed = asyncio.Event()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self._broker.tls:
            return None
        return ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)

    def _make_client(self) -> aiomqtt.Client:
        # A persistent session: messages published while this client reconnects are queued
        # by the broker and delivered afterwards, so a watcher misses nothing.
        if self._mqtt5:
            properties = new_properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            return aiomqtt.Client(
                self._broker.host,
                self._broker.port,
                identifier=self._identifier,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
                tls_context=self._tls_context(),
            )
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            identifier=self._identifier,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            tls_context=self._tls_context(),
        )

    async def run(self) -> None:
        """Stay subscribed to the cabinet, reconnecting after a loss, until cancelled.

        Every message goes to `on_message`; `subscribed` is set while the client is connected.
        """
        while True:
            try:
                async with self._make_client() as client:
                    await client.subscribe(f"{self.topics.base}/#", qos=1)
                    self._client = client
                    self.subscribed.set()
                    async for message in client.messages:
                        if self.on_message is not None:
                            self.on_message(_received(message))
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                logger.info("scripted cloud lost the broker: %s; reconnecting", exc)
            finally:
                self._client = None
                self.subscribed.clear()
            await asyncio.sleep(RECONNECT_DELAY_S)

    @contextlib.asynccontextmanager
    async def connected(self, timeout_s: float = 30.0) -> AsyncIterator[ScriptedCloud]:
        """Run `run()` in the background for the duration of the block, once subscribed."""
        task = asyncio.create_task(self.run(), name="scripted-cloud")
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.subscribed.wait()
            except TimeoutError:
                broker = f"{self._broker.host}:{self._broker.port}"
                raise BrokerUnreachableError(
                    f"cannot connect to the broker at {broker} within {timeout_s:.0f} s: "
                    f"{self.last_error or 'no answer'}"
                ) from None
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def send(
        self,
        command: AnyCommand,
        *,
        lifetime_s: float = 60.0,
        command_id: str | None = None,
        issued_at: datetime | None = None,
    ) -> str:
        """Sign and publish one command at QoS 1; return its command id.

        `issued_at` defaults to now; tests pass an earlier time to send a stale command.
        """
        await self.subscribed.wait()
        if self._client is None:
            raise RuntimeError("send() needs a running connection")
        if self._key is None:
            raise RuntimeError("send() needs a signing key")
        command_id = command_id or f"cmd-{uuid.uuid4().hex[:16]}"
        payload = sign_command(
            self._key,
            self._key_id,
            cabinet_id=self.cabinet_id,
            command_id=command_id,
            command=command,
            lifetime_s=lifetime_s,
            issued_at=issued_at,
        )
        await self._client.publish(self.topics.command, payload, qos=1)
        logger.info("sent %s command %s", command.type, command_id)
        return command_id


def _received(message: aiomqtt.Message) -> ReceivedMessage:
    payload = message.payload
    raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
    envelope = None
    if not str(message.topic).endswith("/status") and not str(message.topic).endswith("/cmd"):
        with contextlib.suppress(ValidationError, ValueError):
            envelope = parse_message(raw)
    return ReceivedMessage(str(message.topic), envelope, raw)


def command_from_args(
    name: str, slot: int | None, order_id: str | None, reason: str | None
) -> AnyCommand:
    """Build a command model from CLI arguments; raise ValueError naming what is missing."""
    if name == "eject":
        return EjectCommand(slot=slot, order_id=order_id)
    if name in ("slot_disable", "slot_enable"):
        if slot is None:
            raise ValueError(f"{name} needs --slot")
        if name == "slot_disable":
            return SlotDisableCommand(slot=slot, reason=reason)
        return SlotEnableCommand(slot=slot)
    if name == "lock":
        return LockCommand(slot=slot)
    if name == "selftest":
        return SelftestCommand()
    if name == "rebirth":
        return RebirthCommand()
    raise ValueError(
        f"unknown command {name!r}; use eject, slot_disable, slot_enable, lock, selftest or rebirth"
    )
