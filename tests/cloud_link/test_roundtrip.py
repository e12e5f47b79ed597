"""Every message kind published through a real broker and parsed back."""

from __future__ import annotations

import json

from cloud_link import (
    BatteryHealth,
    CloudLink,
    EjectOutcomeEvent,
    EjectReport,
    FaultEvent,
    LowStockEvent,
    OutgoingData,
    ReturnEvent,
    SecurityEvent,
    SecurityEventKind,
    StateChange,
    StockReport,
    parse_message,
)
from cloud_link.messages import AnyEnvelope
from protocol.cabinet import EjectOutcome, FaultKind, SlotState
from tests.cloud_link.conftest import CABINET, LinkFactory, observe, running
from tests.support.mosquitto import MosquittoBroker


async def test_connect_publishes_online_and_birth(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link: CloudLink = make_link()
    async with observe(mosquitto) as backend, running(link):
        birth = await backend.next_on("/birth")
        async with observe(mosquitto, f"cabinets/{CABINET}/status") as late:
            status = await late.next_on("/status")

    assert json.loads(status.payload)["state"] == "online"
    assert status.retain
    message = parse_message(birth.payload)
    assert message.cabinet_id == CABINET
    assert message.data.kind == "birth"
    assert message.seq >= 1
    assert message.offline is False


async def test_every_event_kind_round_trips(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    events: list[OutgoingData] = [
        StateChange(slot=3, state=SlotState.CHARGING, previous=SlotState.EMPTY, bank_id="A1B2C3D4"),
        EjectOutcomeEvent(
            command_id="c-1",
            order_id="o-9",
            report=EjectReport(
                outcome=EjectOutcome.TAKEN,
                slot=2,
                bank_id="00AA11BB",
                soc_percent=93,
                temperature_c=31.5,
                uncertain=True,
                late=True,
            ),
        ),
        ReturnEvent(slot=4, bank_id="0011AABB", recognised=True, soc_percent=42),
        FaultEvent(fault=FaultKind.TAMPER, slot=1),
        SecurityEvent(event=SecurityEventKind.TAMPER, slot=1),
        LowStockEvent(rentable_count=1, threshold=2),
        BatteryHealth(
            slot=2, bank_id="0011AABB", soc_percent=90, soh_percent=97, cycle_count=12, retire=True
        ),
        StockReport(rentable=3, charging=2, empty=7, faulted=1),
    ]
    link = make_link()
    received: dict[str, AnyEnvelope] = {}
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        sent = {event.kind: link.send(event) for event in events}
        while len(received) < len(events):
            raw = await backend.next_on("")
            if raw.topic.value.endswith("/status"):
                continue
            message = parse_message(raw.payload)
            if message.data.kind in sent:
                received[message.data.kind] = message

    for event in events:
        message = received[event.kind]
        assert message.data == event
        assert message.seq == sent[event.kind]
