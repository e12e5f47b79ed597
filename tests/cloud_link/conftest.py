"""Fixtures for cloud_link tests: a real broker, a link wired to it and an observing backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_link import (
    DATABASE_NAME,
    AcceptedCommand,
    Birth,
    CloudConfig,
    CloudLink,
    CommandOutcome,
    CommandResult,
    CommandStatus,
    parse_message,
    public_key_base64,
    sign_command,
)
from cloud_link.clock import ManualClock
from cloud_link.commands import Command
from cloud_link.dispatcher import CommandNotice
from tests.support.mosquitto import (  # noqa: F401  (fixtures)
    MosquittoBroker,
    mosquitto,
    mosquitto_factory,
)

CABINET = "cab-001"
KEY_ID = "cloud-2026"
WAIT_S = 10.0
_observer_ids = itertools.count(1)


def make_config(broker: MosquittoBroker, key: Ed25519PrivateKey, **overrides: Any) -> CloudConfig:
    settings: dict[str, Any] = {
        "cabinet_id": CABINET,
        "host": broker.host,
        "port": broker.port,
        "tls": {"enabled": False},
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "commands": {
            "trusted_keys": {KEY_ID: public_key_base64(key)},
            "clock_sync": "synchronised",
        },
    }
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings.get(name), dict):
            settings[name] = {**settings[name], **value}
        else:
            settings[name] = value
    return CloudConfig.model_validate(settings)


def sample_birth() -> Birth:
    return Birth(
        gateway_version="test",
        slot_count=4,
        rentable_count=2,
        charging_count=1,
        empty_count=1,
        faulted_count=0,
        min_rentable_soc_percent=80,
        clock_synchronised=True,
    )


@dataclass
class RecordingHandler:
    """Command handler that records calls and returns a preset outcome."""

    outcome: CommandOutcome = field(
        default_factory=lambda: CommandOutcome(status=CommandStatus.SUCCEEDED)
    )
    calls: list[AcceptedCommand] = field(default_factory=list)
    release: asyncio.Event | None = None
    fail: bool = False
    _called: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, command: AcceptedCommand) -> CommandOutcome:
        self.calls.append(command)
        self._called.set()
        if self.release is not None:
            await self.release.wait()
        if self.fail:
            raise RuntimeError("handler exploded")
        return self.outcome

    async def wait_calls(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.calls) < count:
                self._called.clear()
                await self._called.wait()


@dataclass
class Observer:
    """A backend-side MQTT client that records every message under the prefix."""

    client: aiomqtt.Client
    messages: asyncio.Queue[aiomqtt.Message] = field(default_factory=asyncio.Queue)

    async def next_on(self, suffix: str, wait_s: float = WAIT_S) -> aiomqtt.Message:
        """Return the next message whose topic ends with `suffix`, skipping others."""
        async with asyncio.timeout(wait_s):
            while True:
                message = await self.messages.get()
                if message.topic.value.endswith(suffix):
                    return message

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        await self.client.publish(topic, payload, qos=1, **kwargs)


@contextlib.asynccontextmanager
async def observe(broker: MosquittoBroker, pattern: str = "cabinets/#") -> AsyncIterator[Observer]:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"observer-{next(_observer_ids)}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        observer = Observer(client)
        await client.subscribe(pattern, qos=1)

        async def pump() -> None:
            async for message in client.messages:
                observer.messages.put_nowait(message)

        task = asyncio.create_task(pump())
        try:
            yield observer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running(link: CloudLink) -> AsyncIterator[asyncio.Task[None]]:
    """Run a link in a task; stop it cleanly and close it afterwards."""
    task = asyncio.create_task(link.run(), name="link-under-test")
    try:
        yield task
    finally:
        link.stop()
        try:
            async with asyncio.timeout(WAIT_S):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            link.close()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


LinkFactory = Callable[..., CloudLink]


@pytest.fixture
def make_link(
    tmp_path: Path,
    mosquitto: MosquittoBroker,  # noqa: F811  (the fixture imported above)
    signing_key: Ed25519PrivateKey,
    handler: RecordingHandler,
) -> LinkFactory:
    def build(
        broker: MosquittoBroker | None = None,
        state_dir: Path | None = None,
        clock: Any = None,
        birth: Callable[[], Birth] = sample_birth,
        notice: CommandNotice | None = None,
        **overrides: Any,
    ) -> CloudLink:
        config = make_config(broker or mosquitto, signing_key, **overrides)
        return CloudLink(
            config,
            database=(state_dir or tmp_path / "state") / DATABASE_NAME,
            handler=handler,
            birth_provider=birth,
            clock=clock,
            notice=notice,
        )

    return build


def command_payload(
    key: Ed25519PrivateKey,
    command: Command,
    *,
    command_id: str = "cmd-1",
    lifetime_s: float = 60.0,
    issued_ago_s: float = 0.0,
    key_id: str = KEY_ID,
    cabinet_id: str = CABINET,
) -> bytes:
    """Sign a command with the real wall clock, as a cloud backend would."""
    return sign_command(
        key,
        key_id,
        cabinet_id=cabinet_id,
        command_id=command_id,
        command=command,
        lifetime_s=lifetime_s,
        issued_at=datetime.now(UTC) - timedelta(seconds=issued_ago_s),
    )


def result_of(message: aiomqtt.Message) -> CommandResult:
    data = parse_message(payload_bytes(message)).data
    assert isinstance(data, CommandResult), f"expected a command result, got {data}"
    return data


def payload_bytes(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    assert isinstance(payload, bytes), f"unexpected payload type {type(payload)}"
    return payload
