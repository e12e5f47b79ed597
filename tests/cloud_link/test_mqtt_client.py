"""`PackedProperties` packs like paho's `Properties` and notices changes."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes

from cloud_link.mqtt_client import PackedProperties, new_properties


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
