"""Fixtures for cloud_link tests: a real broker, a link wired to it and an observing backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_link import (
    AcceptedCommand,
    Birth,
    CloudConfig,
    CloudLink,
    CommandOutcome,
    CommandStatus,
    public_key_base64,
)
from cloud_link.clock import ManualClock
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

    async def __call__(self, command: AcceptedCommand) -> CommandOutcome:
        self.calls.append(command)
        if self.release is not None:
            await self.release.wait()
        if self.fail:
            raise RuntimeError("handler exploded")
        return self.outcome


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
        **overrides: Any,
    ) -> CloudLink:
        config = make_config(broker or mosquitto, signing_key, **overrides)
        return CloudLink(
            config,
            state_dir=state_dir or tmp_path / "state",
            handler=handler,
            birth_provider=birth,
            clock=clock,
        )

    return build
