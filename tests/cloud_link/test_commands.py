"""Signed commands through a real broker: handler calls, results, duplicates and rejections."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_link import (
    CloudLink,
    CommandOutcome,
    CommandRejectReason,
    CommandResult,
    CommandStatus,
    EjectCommand,
    EjectReport,
    RebirthCommand,
    SecurityEvent,
    SecurityEventKind,
    SlotDisableCommand,
    parse_message,
    unlock_token_for,
)
from cloud_link.command_store import BeginResult, CommandStore
from cloud_link.connection import MAX_RECEIVED_PACKET_BYTES
from cloud_link.dispatcher import CommandDispatcher
from cloud_link.intake import ReceivedPayload
from protocol.cabinet import EjectOutcome
from tests.cloud_link.conftest import (
    CABINET,
    WAIT_S,
    LinkFactory,
    RecordingHandler,
    command_payload,
    observe,
    payload_bytes,
    result_of,
    running,
)
from tests.support.mosquitto import MosquittoBroker

COMMAND_TOPIC = f"cabinets/{CABINET}/cmd"


async def test_eject_runs_handler_and_publishes_result(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    report = EjectReport(outcome=EjectOutcome.TAKEN, slot=3, bank_id="00AABBCC")
    handler.outcome = CommandOutcome(status=CommandStatus.SUCCEEDED, eject=report)
    link = make_link()
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        payload = command_payload(signing_key, EjectCommand(slot=3, order_id="o-1"))
        await backend.publish(COMMAND_TOPIC, payload)
        result = result_of(await backend.next_on("/cmd/result"))

    assert result.command_id == "cmd-1"
    assert result.command == "eject"
    assert result.status is CommandStatus.SUCCEEDED
    assert result.eject == report
    assert len(handler.calls) == 1
    call = handler.calls[0]
    assert call.command == EjectCommand(slot=3, order_id="o-1")
    assert call.unlock_token == unlock_token_for("cmd-1")
    assert 50.0 < call.deadline_monotonic - call.received_monotonic <= 60.0


async def test_redelivered_command_acts_once(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    link = make_link()
    payload = command_payload(signing_key, SlotDisableCommand(slot=2))
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, payload)
        first = result_of(await backend.next_on("/cmd/result"))
        await backend.publish(COMMAND_TOPIC, payload)
        second = result_of(await backend.next_on("/cmd/result"))
        duplicates = link.stats().commands.duplicates

    assert len(handler.calls) == 1
    assert first == second
    assert duplicates == 1


async def test_duplicate_while_running_is_ignored(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    handler.release = asyncio.Event()
    link = make_link()
    payload = command_payload(signing_key, EjectCommand())
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        for _ in range(3):
            await backend.publish(COMMAND_TOPIC, payload)
        # Payloads are dispatched in order, so the call for cmd-2 shows the copies were seen.
        other = command_payload(signing_key, EjectCommand(), command_id="cmd-2")
        await backend.publish(COMMAND_TOPIC, other)
        await handler.wait_calls(2)
        duplicates = link.stats().commands.duplicates
        handler.release.set()
        results = [result_of(await backend.next_on("/cmd/result")) for _ in range(2)]

    assert [call.command_id for call in handler.calls] == ["cmd-1", "cmd-2"]
    assert duplicates == 2
    assert sorted(result.command_id or "" for result in results) == ["cmd-1", "cmd-2"]


async def test_stale_command_rejected_as_expired(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    link = make_link()
    payload = command_payload(signing_key, EjectCommand(), lifetime_s=30.0, issued_ago_s=3600.0)
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, payload)
        result = result_of(await backend.next_on("/cmd/result"))
        security = parse_message(payload_bytes(await backend.next_on("/event/security"))).data

    assert result.status is CommandStatus.REJECTED
    assert result.reject_reason is CommandRejectReason.EXPIRED
    assert result.command_id == "cmd-1"
    assert handler.calls == []
    assert isinstance(security, SecurityEvent)
    assert security.event is SecurityEventKind.INVALID_DEADLINE
    assert security.command_id == "cmd-1"


async def test_malformed_command_reported_as_security_event(
    mosquitto: MosquittoBroker, make_link: LinkFactory, handler: RecordingHandler
) -> None:
    link = make_link()
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, b"\xff\xfe not utf-8")
        result = result_of(await backend.next_on("/cmd/result"))
        security = parse_message(payload_bytes(await backend.next_on("/event/security"))).data

    assert result.reject_reason is CommandRejectReason.INVALID_UTF8
    assert isinstance(security, SecurityEvent)
    assert security.event is SecurityEventKind.MALFORMED_COMMAND
    assert handler.calls == []


async def test_forged_command_reported_as_security_event(
    mosquitto: MosquittoBroker, make_link: LinkFactory, handler: RecordingHandler
) -> None:
    link = make_link()
    forged = command_payload(Ed25519PrivateKey.generate(), EjectCommand())
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, forged)
        result = result_of(await backend.next_on("/cmd/result"))
        security = parse_message(payload_bytes(await backend.next_on("/event/security"))).data

    assert result.reject_reason is CommandRejectReason.BAD_SIGNATURE
    assert result.command_id is None
    assert isinstance(security, SecurityEvent)
    assert security.event is SecurityEventKind.BAD_SIGNATURE
    assert handler.calls == []


class RecordingNotice:
    """Notes each call, and whether the command in flight was already stored then."""

    def __init__(self) -> None:
        self.link: CloudLink | None = None
        self.command_id = ""
        self.calls: list[tuple[str, bool]] = []
        self.in_read_callback: list[bool] = []  # per call: made outside any task
        self.fail = False

    def _note(self, name: str) -> None:
        assert self.link is not None
        self.in_read_callback.append(asyncio.current_task() is None)
        stored = self.link.commands.lookup(self.command_id) is not None
        self.calls.append((name, stored))
        if self.fail:
            raise RuntimeError("notice failed")

    def expect_eject(self) -> None:
        self._note("expect")

    def drop_expected_eject(self) -> None:
        self._note("drop")


async def test_notice_precedes_checks(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    """Every payload that may be an eject is announced before its checks and record. One
    that turns out to be no new eject is withdrawn. A failing notice stops nothing. All of
    it happens in the socket read callback that reads the payload, before any task runs."""
    notice = RecordingNotice()
    link = notice.link = make_link(notice=notice)

    async def send(payload: bytes, command_id: str) -> CommandResult:
        notice.command_id = command_id
        notice.calls.clear()
        await backend.publish(COMMAND_TOPIC, payload)
        return result_of(await backend.next_on("/cmd/result"))

    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        eject = command_payload(signing_key, EjectCommand(), command_id="cmd-1")

        forged = command_payload(Ed25519PrivateKey.generate(), EjectCommand())
        assert (await send(forged, "")).reject_reason is CommandRejectReason.BAD_SIGNATURE
        assert notice.calls == [("expect", False), ("drop", False)]

        assert (await send(eject, "cmd-1")).status is CommandStatus.SUCCEEDED
        assert notice.calls == [("expect", False)]  # before the record, and kept

        await send(eject, "cmd-1")  # a duplicate
        assert notice.calls == [("expect", True), ("drop", True)]

        disable = command_payload(signing_key, SlotDisableCommand(slot=1), command_id="cmd-2")
        assert (await send(disable, "cmd-2")).status is CommandStatus.SUCCEEDED
        assert notice.calls == []  # no "eject" in the payload, so not announced

        notice.fail = True
        second = command_payload(signing_key, EjectCommand(), command_id="cmd-3")
        assert (await send(second, "cmd-3")).status is CommandStatus.SUCCEEDED

    assert [call.command_id for call in handler.calls] == ["cmd-1", "cmd-2", "cmd-3"]
    assert notice.in_read_callback == [True] * 6  # four announcements, two withdrawals


async def test_failing_handler_keeps_session(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    handler.fail = True
    link = make_link()
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, command_payload(signing_key, EjectCommand()))
        failed = result_of(await backend.next_on("/cmd/result"))
        handler.fail = False
        second = command_payload(signing_key, EjectCommand(), command_id="cmd-2")
        await backend.publish(COMMAND_TOPIC, second)
        succeeded = result_of(await backend.next_on("/cmd/result"))

    assert failed.status is CommandStatus.FAILED
    assert failed.reject_reason is CommandRejectReason.EXECUTION_ERROR
    assert "handler exploded" in (failed.detail or "")
    assert succeeded.status is CommandStatus.SUCCEEDED


async def test_response_topic_and_correlation_data(
    mosquitto: MosquittoBroker, make_link: LinkFactory, signing_key: Ed25519PrivateKey
) -> None:
    link = make_link()
    reply_topic = f"cabinets/{CABINET}/replies/backend-7"
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = reply_topic
    properties.CorrelationData = b"req-42"
    properties.MessageExpiryInterval = 20
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        payload = command_payload(signing_key, EjectCommand())
        await backend.publish(COMMAND_TOPIC, payload, properties=properties)
        reply = await backend.next_on("/replies/backend-7")

    assert result_of(reply).status is CommandStatus.SUCCEEDED
    assert reply.properties is not None
    assert getattr(reply.properties, "CorrelationData", None) == b"req-42"


@pytest.mark.parametrize("response_topic", ["elsewhere/x", COMMAND_TOPIC])
async def test_response_topic_outside_prefix_ignored(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    signing_key: Ed25519PrivateKey,
    response_topic: str,
) -> None:
    """A response topic outside the prefix, or the cabinet's own command topic (the gateway
    would read its result as a new command), gets the result on the default topic."""
    link = make_link()
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = response_topic
    async with observe(mosquitto, "#") as backend, running(link):
        await link.wait_connected()
        await backend.publish(
            COMMAND_TOPIC, command_payload(signing_key, EjectCommand()), properties=properties
        )
        result = await backend.next_on("/cmd/result")
        received = link.stats().commands.received

    assert result_of(result).status is CommandStatus.SUCCEEDED
    assert received == 1


async def test_mqtt311_command_uses_payload_deadline(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    link = make_link(mqtt_version="3.1.1")
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(
            COMMAND_TOPIC, command_payload(signing_key, EjectCommand(), lifetime_s=20.0)
        )
        result = result_of(await backend.next_on("/cmd/result"))
        stale = command_payload(signing_key, EjectCommand(), command_id="old", issued_ago_s=100.0)
        await backend.publish(COMMAND_TOPIC, stale)
        rejected = result_of(await backend.next_on("/cmd/result"))

    assert result.status is CommandStatus.SUCCEEDED
    assert 10.0 < handler.calls[0].deadline_monotonic - handler.calls[0].received_monotonic <= 20.0
    assert rejected.reject_reason is CommandRejectReason.EXPIRED
    assert len(handler.calls) == 1


async def test_rebirth_command_republishes_birth(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    link = make_link()
    async with observe(mosquitto) as backend, running(link):
        first = parse_message(payload_bytes(await backend.next_on("/birth")))
        await backend.publish(COMMAND_TOPIC, command_payload(signing_key, RebirthCommand()))
        second = parse_message(payload_bytes(await backend.next_on("/birth")))
        result = result_of(await backend.next_on("/cmd/result"))

    assert second.seq > first.seq
    assert result.status is CommandStatus.SUCCEEDED
    assert handler.calls == []


async def test_restart_leaves_open_command_for_gateway(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    handler.release = asyncio.Event()  # never set: the handler is still running at shutdown
    payload = command_payload(signing_key, EjectCommand(slot=1))
    link = make_link()
    async with observe(mosquitto) as backend:
        async with running(link):
            await link.wait_connected()
            await backend.publish(COMMAND_TOPIC, payload)
            await handler.wait_calls(1)

        restarted = make_link()
        pending = restarted.pending_commands()
        async with running(restarted):
            await restarted.wait_connected()
            restarted.complete_command(
                "cmd-1",
                "eject",
                CommandOutcome(
                    status=CommandStatus.FAILED,
                    eject=EjectReport(outcome=EjectOutcome.NOT_TAKEN, slot=1),
                ),
            )
            final = result_of(await backend.next_on("/cmd/result"))
            await backend.publish(COMMAND_TOPIC, payload)
            repeated = result_of(await backend.next_on("/cmd/result"))

    assert [command.command_id for command in pending] == ["cmd-1"]
    assert pending[0].unlock_token == handler.calls[0].unlock_token
    assert final.status is CommandStatus.FAILED
    assert repeated == final
    assert len(handler.calls) == 1


async def test_invalid_json_rejected_over_broker(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link()
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, b"\xff\x00garbage")
        first = result_of(await backend.next_on("/cmd/result"))
        await backend.publish(COMMAND_TOPIC, json.dumps({"hello": 1}).encode())
        second = result_of(await backend.next_on("/cmd/result"))

    assert first.reject_reason is CommandRejectReason.INVALID_UTF8
    assert second.reject_reason is CommandRejectReason.INVALID_ENVELOPE


async def test_command_queued_while_offline_runs_after_start(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    first = make_link()
    async with running(first):
        await first.wait_connected()
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = 60
    async with observe(mosquitto) as backend:
        # The broker keeps the cabinet's session, so it queues the command meanwhile.
        payload = command_payload(signing_key, EjectCommand(), command_id="while-offline")
        await backend.publish(COMMAND_TOPIC, payload, properties=properties)
        second = make_link()
        async with running(second):
            result = result_of(await backend.next_on("/cmd/result"))

    assert result.command_id == "while-offline"
    assert result.status is CommandStatus.SUCCEEDED
    assert [call.command_id for call in handler.calls] == ["while-offline"]


def stop_before_storing(patch: pytest.MonkeyPatch, stopped: asyncio.Event) -> None:
    def submit(self: CommandDispatcher, received: ReceivedPayload) -> None:
        stopped.set()  # the gateway stops here: nothing stored, no PUBACK

    patch.setattr(CommandDispatcher, "submit", submit)


def fail_the_record(patch: pytest.MonkeyPatch, stopped: asyncio.Event) -> None:
    def begin(self: CommandStore, *args: object, **kwargs: object) -> BeginResult:
        stopped.set()
        raise sqlite3.OperationalError("disk I/O error")

    patch.setattr(CommandStore, "begin", begin)


@pytest.mark.parametrize("first_attempt", [stop_before_storing, fail_the_record])
async def test_unstored_command_arrives_again(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
    first_attempt: Callable[[pytest.MonkeyPatch, asyncio.Event], None],
) -> None:
    """A command left unstored, by a gateway that stops or by a failed durable record, gets
    no PUBACK. The broker sends it again after the next connect, and it gets one result."""
    stopped = asyncio.Event()
    async with observe(mosquitto) as backend:
        with pytest.MonkeyPatch.context() as patch:
            first_attempt(patch, stopped)
            first = make_link()
            async with running(first):
                await first.wait_connected()
                payload = command_payload(signing_key, EjectCommand(slot=2), command_id="lost")
                await backend.publish(COMMAND_TOPIC, payload)
                async with asyncio.timeout(WAIT_S):
                    await stopped.wait()

        second = make_link()
        async with running(second):
            result = result_of(await backend.next_on("/cmd/result"))

    assert result.command_id == "lost"
    assert result.status is CommandStatus.SUCCEEDED
    assert [call.command_id for call in handler.calls] == ["lost"]


async def test_huge_payload_dropped_by_broker(
    mosquitto: MosquittoBroker, make_link: LinkFactory, signing_key: Ed25519PrivateKey
) -> None:
    """The gateway's Maximum Packet Size keeps a huge payload at the broker, while a payload
    over the command limit but under the packet limit still gets its rejection."""
    link = make_link()
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        await backend.publish(COMMAND_TOPIC, b"x" * (MAX_RECEIVED_PACKET_BYTES + 1))
        await backend.publish(COMMAND_TOPIC, b"{" + b" " * 9000 + b"}")
        await backend.publish(
            COMMAND_TOPIC, command_payload(signing_key, EjectCommand(), command_id="after")
        )
        results = [result_of(await backend.next_on("/cmd/result")) for _ in range(2)]
        received = link.stats().commands.received

    assert [result.reject_reason for result in results] == [CommandRejectReason.TOO_LARGE, None]
    assert results[1].command_id == "after"
    assert received == 2
