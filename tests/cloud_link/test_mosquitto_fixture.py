"""The shared Mosquitto fixture: restart on the same port, pause and resume, extra config."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from tests.support.mosquitto import BrokerFactory, BrokerStartError, MosquittoBroker


async def round_trip(broker: MosquittoBroker) -> bytes:
    async with aiomqtt.Client(broker.host, broker.port, identifier="fixture-check") as client:
        await client.subscribe("check/#", qos=1)
        await client.publish("check/a", b"ping", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                return message.payload
    raise AssertionError("no message")


async def test_restart_keeps_port(mosquitto: MosquittoBroker) -> None:
    port = mosquitto.port
    mosquitto.restart()

    assert mosquitto.port == port
    assert await round_trip(mosquitto) == b"ping"


async def test_pause_blocks_until_resume(mosquitto: MosquittoBroker) -> None:
    mosquitto.pause()
    client = aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="paused", timeout=0.5)
    with pytest.raises(aiomqtt.MqttError):
        await client.__aenter__()
    mosquitto.resume()

    assert await round_trip(mosquitto) == b"ping"


def test_bad_extra_config_fails_start(mosquitto_factory: BrokerFactory) -> None:
    with pytest.raises(BrokerStartError, match="mosquitto exited"):
        mosquitto_factory(extra_config=["no_such_option 1"])
