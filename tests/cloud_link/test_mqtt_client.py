"""`PackedProperties` packs like paho's `Properties`; `LinkClient` waits cancel cleanly."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes

from cloud_link.mqtt_client import LinkClient, PackedProperties, new_properties


def test_packed_properties_match_paho() -> None:
    packed = PackedProperties(PacketTypes.PUBLISH)
    plain = new_properties(PacketTypes.PUBLISH)
    for properties in (packed, plain):
        properties.PayloadFormatIndicator = 1
        properties.ContentType = "application/json"

    first = packed.pack()
    second = packed.pack()

    assert first == plain.pack()
    assert second is first


def test_packed_properties_repack_after_change() -> None:
    packed = PackedProperties(PacketTypes.PUBLISH)
    plain = new_properties(PacketTypes.PUBLISH)
    for properties in (packed, plain):
        properties.ContentType = "application/json"
    before = packed.pack()
    for properties in (packed, plain):
        properties.MessageExpiryInterval = 120

    after = packed.pack()

    assert after == plain.pack()
    assert after != before


async def test_wait_cancelled_with_result_raises() -> None:
    """A SUBACK and a cancellation in the same loop pass must still cancel the wait."""
    client = LinkClient("127.0.0.1", 1883)  # never connected
    suback: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(client._wait_for(suback, timeout=5.0))
    await asyncio.sleep(0)  # the task now waits on the future

    suback.set_result(0)
    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_wait_times_out_as_mqtt_error() -> None:
    client = LinkClient("127.0.0.1", 1883)  # never connected
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    with pytest.raises(aiomqtt.MqttError, match="timed out"):
        await client._wait_for(never, timeout=0.01)
