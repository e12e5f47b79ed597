"""Session behaviour against a real broker: outages, restarts, dead letters and flapping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cloud_link import (
    Birth,
    EjectOutcomeEvent,
    EjectReport,
    FaultEvent,
    Heartbeat,
    LowStockEvent,
    ReturnEvent,
    SlotSnapshot,
    StateChange,
    parse_message,
)
from cloud_link.messages import AnyEnvelope
from protocol.cabinet import EjectOutcome, FaultKind, LinkState, SlotState
from tests.cloud_link.conftest import (
    WAIT_S,
    LinkFactory,
    Observer,
    observe,
    payload_bytes,
    running,
    sample_birth,
)
from tests.support.mosquitto import BrokerFactory, MosquittoBroker


async def collect(backend: Observer, suffix: str, count: int) -> list[AnyEnvelope]:
    return [parse_message(payload_bytes(await backend.next_on(suffix))) for _ in range(count)]


async def test_outage_queues_and_flags_offline(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(outbox={"no_subscriber_retry_s": 0.05})
    async with running(link):
        await link.wait_connected()
        mosquitto.stop()
        await asyncio.wait_for(link.wait_until(lambda s: s.link is LinkState.OFFLINE), WAIT_S)
        sent = [
            link.send(EjectOutcomeEvent(report=EjectReport(outcome=EjectOutcome.TAKEN, slot=n)))
            for n in range(1, 21)
        ]
        link.send(StateChange(slot=1, state=SlotState.EMPTY))
        mosquitto.start()
        async with observe(mosquitto) as backend:
            events = await collect(backend, "/event/eject_outcome", len(sent))
            state = parse_message(payload_bytes(await backend.next_on("/state")))
        stats = await asyncio.wait_for(link.wait_until(lambda s: s.outbox.pending == 0), WAIT_S)

    assert [event.seq for event in events] == sent
    assert all(event.offline for event in events)
    assert state.offline
    assert stats.disconnects >= 1
    assert stats.outbox.pending == 0


async def test_event_without_subscriber_is_kept(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(outbox={"no_subscriber_retry_s": 0.05})
    async with running(link):
        await link.wait_connected()
        seq = link.send(FaultEvent(fault=FaultKind.TAMPER, slot=2))
        kept = await asyncio.wait_for(
            link.wait_until(lambda s: s.publisher.kept_without_subscribers >= 1), WAIT_S
        )
        async with observe(mosquitto) as backend:
            event = parse_message(payload_bytes(await backend.next_on("/event/fault")))

    assert kept.outbox.pending >= 1
    assert event.seq == seq


async def test_broker_restart_gives_fresh_online_and_birth(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link()
    async with running(link):
        await link.wait_connected()
        first_connects = link.stats().connects
        mosquitto.restart()
        async with observe(mosquitto) as backend:
            stats = await asyncio.wait_for(
                link.wait_until(
                    lambda s: s.connects > first_connects and s.link is not LinkState.OFFLINE
                ),
                WAIT_S,
            )
            # Births are not kept without subscribers, so ask for one after subscribing.
            link.request_rebirth()
            birth = parse_message(payload_bytes(await backend.next_on("/birth")))
        async with observe(mosquitto, "cabinets/+/status") as late:
            status = await late.next_on("/status")

    assert stats.connects == first_connects + 1
    assert birth.offline is False
    assert b'"online"' in payload_bytes(status)


async def test_backlog_survives_broker_restart_in_order(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(outbox={"max_in_flight": 4, "no_subscriber_retry_s": 0.05})
    async with running(link):
        await link.wait_connected()
        mosquitto.pause()
        sent = [link.send(FaultEvent(fault=FaultKind.OVERHEAT, slot=n % 8 + 1)) for n in range(200)]
        mosquitto.kill()
        mosquitto.start()
        async with observe(mosquitto) as backend:
            received = await collect(backend, "/event/fault", len(sent))
        drained = await asyncio.wait_for(link.wait_until(lambda s: s.outbox.pending == 0), WAIT_S)

    seqs = [event.seq for event in received]
    assert sorted(set(seqs)) == sent
    assert drained.publisher.published >= len(sent)


def big_birth() -> Birth:
    slots = tuple(SlotSnapshot(slot=n, state=SlotState.READY) for n in range(1, 25))
    return sample_birth().model_copy(update={"slots": slots})


async def test_message_size_limit_dead_letters_after_retries(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory
) -> None:
    # Mosquitto 2.0 closes the connection on a message over message_size_limit.
    broker = mosquitto_factory(extra_config=["message_size_limit 1000"])
    link = make_link(broker=broker, birth=big_birth, outbox={"max_publish_attempts": 2})
    async with observe(broker) as backend, running(link):
        await link.wait_connected()
        seq = link.send(FaultEvent(fault=FaultKind.BOARD_RESET))
        fault = parse_message(payload_bytes(await backend.next_on("/event/fault")))
        stats = await asyncio.wait_for(
            link.wait_until(lambda s: s.outbox.dead_letters >= 1), WAIT_S
        )
        letters = link.outbox.dead_letters()

    assert fault.seq == seq
    assert stats.disconnects >= 2
    assert [letter.topic.rsplit("/", 1)[-1] for letter in letters] == ["birth"]
    assert "connection lost" in letters[0].reason


async def test_max_packet_size_dead_letters_before_sending(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory
) -> None:
    broker = mosquitto_factory(extra_config=["max_packet_size 1000"])
    link = make_link(broker=broker, birth=big_birth)
    async with observe(broker) as backend, running(link):
        await link.wait_connected()
        seq = link.send(FaultEvent(fault=FaultKind.BOARD_RESET))
        fault = parse_message(payload_bytes(await backend.next_on("/event/fault")))
        letters = link.outbox.dead_letters()
        stats = link.stats()

    assert fault.seq == seq
    assert stats.disconnects == 0
    assert len(letters) == 1
    assert "maximum of 1000" in letters[0].reason


async def test_broker_reason_code_dead_letters(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny cabinets/+/event/low_stock\n")
    broker = mosquitto_factory(extra_config=[f"acl_file {acl}"])
    link = make_link(broker=broker)
    async with observe(broker) as backend, running(link):
        await link.wait_connected()
        link.send(LowStockEvent(rentable_count=0, threshold=2))
        seq = link.send(FaultEvent(fault=FaultKind.BOARD_RESET))
        fault = parse_message(payload_bytes(await backend.next_on("/event/fault")))
        letters = link.outbox.dead_letters()

    assert fault.seq == seq
    assert len(letters) == 1
    assert letters[0].reason_code == 0x87  # not authorized
    assert letters[0].topic.endswith("/event/low_stock")


async def test_duplicate_client_id_detected_as_flapping(
    make_link: LinkFactory, tmp_path: Path
) -> None:
    first = make_link(client_id="same-id", flap_limit=2, state_dir=tmp_path / "one")
    second = make_link(client_id="same-id", flap_limit=2, state_dir=tmp_path / "two")
    async with running(first), running(second):
        stats = await asyncio.wait_for(first.wait_until(lambda s: s.flaps >= 2), WAIT_S)

    assert stats.flaps >= 2
    assert stats.connects >= 2


async def test_stop_flushes_and_publishes_offline(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link()
    async with observe(mosquitto) as backend:
        async with running(link):
            await link.wait_connected()
            sent = [link.send(FaultEvent(fault=FaultKind.OVERHEAT, slot=n)) for n in range(1, 9)]
        # `running` returned only after run() did: the flush happened before the disconnect.
        received = await collect(backend, "/event/fault", len(sent))
        status = json.loads(payload_bytes(await backend.next_on("/status")))
        while status["state"] != "offline":
            status = json.loads(payload_bytes(await backend.next_on("/status")))

    assert [event.seq for event in received] == sent
    assert status["reason"] == "shutdown"


async def test_heartbeat_reports_outbox(mosquitto: MosquittoBroker, make_link: LinkFactory) -> None:
    link = make_link(heartbeat_interval_s=60)
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        seq = link.send_heartbeat()
        message = await backend.next_on("/heartbeat")

    heartbeat = parse_message(payload_bytes(message))
    assert heartbeat.seq == seq
    assert isinstance(heartbeat.data, Heartbeat)
    assert heartbeat.data.interval_s == 60
    assert heartbeat.data.link is not LinkState.OFFLINE
    assert message.properties is not None
    assert getattr(message.properties, "MessageExpiryInterval", None) == 120


async def test_mqtt311_events_round_trip(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(mqtt_version="3.1.1")
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        seq = link.send(ReturnEvent(slot=5, bank_id="0A0B0C0D", recognised=True))
        event = parse_message(payload_bytes(await backend.next_on("/event/bank_returned")))

    assert event.seq == seq
    assert event.data == ReturnEvent(slot=5, bank_id="0A0B0C0D", recognised=True)


async def test_failing_birth_provider_keeps_session(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    def broken_birth() -> Birth:
        raise RuntimeError("cabinet state not ready")

    link = make_link(birth=broken_birth)
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        seq = link.send(FaultEvent(fault=FaultKind.BOARD_OFFLINE, board=2))
        event = parse_message(payload_bytes(await backend.next_on("/event/fault")))

    assert event.seq == seq


async def test_in_flight_window_is_bounded(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(outbox={"max_in_flight": 3})
    async with observe(mosquitto), running(link):
        await link.wait_connected()
        # Wait until the birth is acknowledged, so the window starts empty.
        await asyncio.wait_for(link.wait_until(lambda s: s.outbox.pending == 0), WAIT_S)
        mosquitto.pause()
        for slot in range(1, 11):
            link.send(FaultEvent(fault=FaultKind.LOCK_FAULT, slot=slot))
        stats = await asyncio.wait_for(link.wait_until(lambda s: s.in_flight >= 3), WAIT_S)
        mosquitto.resume()
        drained = await asyncio.wait_for(link.wait_until(lambda s: s.outbox.pending == 0), WAIT_S)

    assert stats.in_flight == 3
    assert stats.outbox.pending == 10
    assert drained.in_flight == 0
