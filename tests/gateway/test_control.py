"""Control socket tests: a real Unix socket served by ControlServer over an in-test daemon."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.api import (
    ApiError,
    ApiErrorCode,
    BankReading,
    BankReply,
    BoardBusInfo,
    BoardStatus,
    BusReply,
    DaemonApi,
    DeadLetterInfo,
    ErrorRecord,
    EventRecord,
    HealthSample,
    MaintenanceEjectReply,
    MqttLinkStatus,
    OrderEvidence,
    OrderStep,
    OutboxLaneStatus,
    OutboxReply,
    OutboxSummary,
    SelfTestResult,
    SerialLinkStatus,
    SlotInfo,
    SlotsReply,
    StatusReply,
    StockCounts,
    SupportBundle,
)
from gateway.control import (
    MAX_REQUEST_BYTES,
    ControlClient,
    ControlProtocolError,
    ControlServer,
    ControlSocketInUseError,
    ControlSocketSetupError,
    DaemonNotRunningError,
)
from protocol.cabinet import EjectOutcome, LinkState, SlotState

NOW = 1_780_000_000.0  # fixed wall time, so that replies are comparable
WAIT_S = 5.0  # upper bound on every wait in these tests; a correct run finishes far sooner


def _slots() -> list[SlotInfo]:
    return [
        SlotInfo(
            slot=1,
            board=1,
            state=SlotState.READY,
            bank_id="A1B2C3D4",
            charge_pct=96,
            temperature_c=27.5,
            voltage_mv=4105,
            health_pct=93,
            cycles=120,
            rentable=True,
        ),
        SlotInfo(
            slot=2,
            board=1,
            state=SlotState.CHARGING,
            bank_id="00FF10EE",
            charge_pct=41,
            temperature_c=33.0,
            voltage_mv=3790,
            health_pct=64,
            cycles=610,
            retire=True,
        ),
        SlotInfo(slot=3, board=2, state=SlotState.FAULTED, faults=["LOCK_STUCK"]),
        SlotInfo(slot=4, board=2, state=SlotState.DISABLED, disabled_reason="cracked latch"),
    ]


class FakeDaemon(DaemonApi):
    """In-test DaemonApi with canned replies; records the actions it was asked to do."""

    def __init__(self) -> None:
        self.slot_list = _slots()
        self.history = [
            EventRecord(
                seq=index,
                at=NOW + index,
                kind="bank_returned",
                slot=1,
                summary=f"bank returned #{index}",
                data={"identified": True, "bank_id": f"00000000A1B2C3D{index}"},
            )
            for index in range(1, 4)
        ]
        self.live: asyncio.Queue[EventRecord | None] = asyncio.Queue()
        self.following = asyncio.Event()
        self.stream_closed = asyncio.Event()
        self.flood_events = 0  # when set, `events` yields this many large events at once
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.config: dict[str, Any] = {
            "cabinet": {"id": "CAB-0042"},
            "mqtt": {"url": "mqtts://broker.test:8883", "password": "hunter2-fake"},
            "tls": {"client_key": "/etc/cabinet-gateway/fake-client.key"},
        }
        self.busy_slots: set[int] = set()
        self.failing_slots: set[int] = set()
        self.crash = False
        self.log_lines = [
            "INFO connected to mqtts://gw:hunter2-fake@broker.test:8883",
            "WARNING board 2 timed out",
        ]

    def _slot(self, slot: int) -> SlotInfo:
        for info in self.slot_list:
            if info.slot == slot:
                return info
        raise ApiError(ApiErrorCode.UNKNOWN_SLOT, f"slot {slot} does not exist (1-4)")

    async def status(self) -> StatusReply:
        if self.crash:
            raise RuntimeError("fake daemon bug")
        return StatusReply(
            cabinet_id="CAB-0042",
            version="0.1.0",
            uptime_s=93_784.0,
            mqtt=MqttLinkStatus(
                state=LinkState.ONLINE, broker="mqtts://broker.test:8883", connected_since=NOW - 600
            ),
            serial=SerialLinkStatus(
                state=LinkState.DEGRADED,
                port="/dev/ttyS1",
                port_open=True,
                last_error="board 2 timed out",
            ),
            boards=[
                BoardStatus(
                    address=1,
                    board_id="0000000000001001",
                    firmware="1.4.2",
                    first_slot=1,
                    slot_count=2,
                    link=LinkState.ONLINE,
                ),
                BoardStatus(
                    address=2,
                    board_id=None,
                    firmware=None,
                    first_slot=3,
                    slot_count=2,
                    link=LinkState.OFFLINE,
                    reason="no reply for 30 s",
                ),
            ],
            outbox=OutboxSummary(
                lanes=[
                    OutboxLaneStatus(lane="urgent", depth=0, bytes=0),
                    OutboxLaneStatus(lane="transactional", depth=3, bytes=1536, oldest_age_s=75.0),
                    OutboxLaneStatus(lane="telemetry", depth=12, bytes=20480, oldest_age_s=4000.0),
                ],
                dead_letters=1,
                dropped_telemetry=7,
            ),
            stock=StockCounts(rentable=1, charging=1, empty=0, faulted=1, disabled=1),
            last_errors=[ErrorRecord(at=NOW - 30, source="board 2", message="reply timed out")],
        )

    async def slots(self) -> SlotsReply:
        return SlotsReply(slots=self.slot_list)

    async def bank(self, slot: int) -> BankReply:
        info = self._slot(slot)
        if info.bank_id is None:
            raise ApiError(ApiErrorCode.SLOT_EMPTY, f"slot {slot} has no bank")
        return BankReply(
            slot=slot,
            state=info.state,
            bank_id=info.bank_id,
            charge_pct=info.charge_pct,
            voltage_mv=info.voltage_mv,
            current_ma=850,
            temperature_c=info.temperature_c,
            cycles=info.cycles,
            health_pct=info.health_pct,
            capacity_mah=9600,
            retire=info.retire,
            read_at=NOW,
            health_history=[
                HealthSample(at=NOW - 86_400 * 30, health_pct=97, cycles=80),
                HealthSample(at=NOW, health_pct=93, cycles=120),
            ],
        )

    async def bus(self) -> BusReply:
        return BusReply(
            port="/dev/ttyS1",
            port_open=True,
            frames_sent=52_001,
            frames_received=51_870,
            bytes_sent=936_018,
            bytes_received=2_490_113,
            bytes_dropped=17,
            crc_errors=4,
            timeouts=127,
            retries=131,
            echoes=0,
            latency_p50_s=0.0062,
            latency_p99_s=0.0381,
            reopens=2,
            boards=[
                BoardBusInfo(
                    address=1,
                    requests=26_000,
                    replies=25_999,
                    timeouts=1,
                    retries=1,
                    errors=0,
                    latency_p50_s=0.006,
                    latency_p99_s=0.02,
                ),
                BoardBusInfo(
                    address=2, requests=26_001, replies=25_871, timeouts=126, retries=130, errors=3
                ),
            ],
        )

    async def outbox(self) -> OutboxReply:
        status = await self.status()
        return OutboxReply(
            lanes=status.outbox.lanes,
            dropped_telemetry=7,
            dead_letter_count=1,
            dead_letters=[
                DeadLetterInfo(
                    seq=9_001,
                    topic="cabinets/CAB-0042/events",
                    size=812,
                    reason="payload too large",
                    reason_code=149,
                    failed_at=NOW - 3600,
                )
            ],
        )

    async def events(self, follow: bool, limit: int) -> AsyncGenerator[EventRecord, None]:
        try:
            for index in range(self.flood_events):
                yield EventRecord(seq=index, at=NOW, kind="flood", summary="x" * 4000)
            for record in self.history[-limit:] if limit else []:
                yield record
            if not follow:
                return
            self.following.set()
            while (live := await self.live.get()) is not None:
                yield live
        finally:
            self.stream_closed.set()

    async def selftest(self, slot: int) -> SelfTestResult:
        self._slot(slot)
        self.calls.append(("selftest", (slot,)))
        if slot in self.busy_slots:
            raise ApiError(ApiErrorCode.SLOT_BUSY, f"slot {slot} is ejecting")
        failed = ["LOCK_SENSOR"] if slot in self.failing_slots else []
        return SelfTestResult(slot=slot, passed=not failed, failed_checks=failed, at=NOW)

    async def slot_disable(self, slot: int, reason: str) -> SlotInfo:
        info = self._slot(slot).model_copy(
            update={"state": SlotState.DISABLED, "disabled_reason": reason}
        )
        self.calls.append(("slot_disable", (slot, reason)))
        return info

    async def slot_enable(self, slot: int) -> SlotInfo:
        info = self._slot(slot).model_copy(update={"disabled_reason": None})
        self.calls.append(("slot_enable", (slot,)))
        return info

    async def maintenance_eject(
        self, slot: int, reason: str, technician: str
    ) -> MaintenanceEjectReply:
        info = self._slot(slot)
        self.calls.append(("maintenance_eject", (slot, reason, technician)))
        return MaintenanceEjectReply(
            slot=slot, outcome=EjectOutcome.TAKEN, bank_id=info.bank_id, audit_seq=4711
        )

    async def order(self, order_id: str) -> OrderEvidence:
        if order_id != "R-20261204-0001":
            raise ApiError(ApiErrorCode.NOT_FOUND, f"no order {order_id!r}")
        return OrderEvidence(
            order_id=order_id,
            kind="rent",
            slot=1,
            bank_id="A1B2C3D4",
            outcome=EjectOutcome.TAKEN,
            bank_at_eject=BankReading(
                at=NOW,
                bank_id="A1B2C3D4",
                charge_pct=96,
                temperature_c=27.5,
                voltage_mv=4105,
                health_pct=93,
            ),
            bank_at_return=BankReading(
                at=NOW + 7200, bank_id="A1B2C3D4", charge_pct=35, temperature_c=31.0
            ),
            steps=[
                OrderStep(at=NOW - 1, step="received", detail="cmd 77"),
                OrderStep(at=NOW, step="unlock_sent"),
                OrderStep(at=NOW + 4, step="taken"),
            ],
        )

    async def bundle(self) -> SupportBundle:
        # Passes the config through unredacted, like a daemon with a bug: the CLI must still
        # keep the secrets out of the archive.
        return SupportBundle(
            created_at=NOW,
            cabinet_id="CAB-0042",
            version="0.1.0",
            config=self.config,
            status=await self.status(),
            recent_events=self.history,
            log_lines=self.log_lines,
        )


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, daemon: FakeDaemon | None = None, **options: Any
) -> AsyncIterator[tuple[ControlServer, FakeDaemon]]:
    daemon = daemon or FakeDaemon()
    server = ControlServer(daemon, tmp_path / "control.sock", None, **options)
    await server.start()
    try:
        yield server, daemon
    finally:
        await server.close()


async def _exchange(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    """Send raw request lines on one connection and return one decoded reply per line."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        replies = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), WAIT_S)
            replies.append(json.loads(reply))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


async def test_status_roundtrip_through_client(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, daemon):
        client = ControlClient(server.path)
        reply = await asyncio.to_thread(client.status)
    assert reply == await daemon.status()


async def test_socket_mode_and_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    server = ControlServer(FakeDaemon(), tmp_path / "control.sock", group)
    await server.start()
    try:
        info = (tmp_path / "control.sock").stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid()
        assert info.st_uid == os.getuid()
    finally:
        await server.close()
    assert not (tmp_path / "control.sock").exists()


async def test_unknown_group_rejected(tmp_path: Path) -> None:
    server = ControlServer(FakeDaemon(), tmp_path / "control.sock", "no-such-group-cgw")
    with pytest.raises(ControlSocketSetupError, match="no-such-group-cgw"):
        await server.start()
    assert not (tmp_path / "control.sock").exists()


async def test_stale_socket_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound, never listening: what a crashed daemon leaves behind
    async with serving(tmp_path) as (server, _daemon):
        reply = await asyncio.to_thread(ControlClient(server.path).slots)
    assert len(reply.slots) == 4


async def test_live_socket_not_replaced(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _daemon):
        second = ControlServer(FakeDaemon(), server.path, None)
        with pytest.raises(ControlSocketInUseError):
            await second.start()
        reply = await asyncio.to_thread(ControlClient(server.path).slots)
        assert len(reply.slots) == 4


async def test_regular_file_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(ControlSocketSetupError, match="not a socket"):
        await ControlServer(FakeDaemon(), path, None).start()
    assert path.read_text() == "not a socket"


MALFORMED = [
    (b"this is not json\n", None, "invalid_request"),
    (b"[1, 2]\n", None, "invalid_request"),
    (b'{"id": 5}\n', 5, "invalid_request"),
    (b'{"id": [1], "method": "status"}\n', None, "invalid_request"),
    (b'{"id": 6, "method": "status", "params": [1]}\n', 6, "invalid_params"),
    (b'{"id": 7, "method": "reboot"}\n', 7, "unknown_method"),
    (b'{"id": 8, "method": "bank", "params": {"slot": 0}}\n', 8, "invalid_params"),
    (b'{"id": 9, "method": "bank", "params": {}}\n', 9, "invalid_params"),
    (b'{"id": 10, "method": "status", "params": {"verbose": true}}\n', 10, "invalid_params"),
    (b'{"id": "x", "method": "bank", "params": {"slot": 99}}\n', "x", "unknown_slot"),
    (b"\xff\xfe{}\n", None, "invalid_request"),
]


@pytest.mark.parametrize(("line", "request_id", "code"), MALFORMED)
async def test_malformed_request_gets_error(
    tmp_path: Path, line: bytes, request_id: Any, code: str
) -> None:
    async with serving(tmp_path) as (server, _daemon):
        ok = b'{"id": 99, "method": "slots"}\n'
        error_reply, ok_reply = await _exchange(server.path, line, ok)
    assert error_reply["id"] == request_id
    assert error_reply["error"]["code"] == code
    assert error_reply["error"]["message"]
    assert ok_reply["id"] == 99
    assert len(ok_reply["result"]["slots"]) == 4


async def test_invalid_params_named_in_message(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _daemon):
        line = b'{"id": 1, "method": "slot.disable", "params": {"slot": 2}}\n'
        [reply] = await _exchange(server.path, line)
    assert reply["error"]["code"] == "invalid_params"
    assert "reason" in reply["error"]["message"]


async def test_oversized_request_rejected(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _daemon):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        padding = "x" * (MAX_REQUEST_BYTES + 10)
        writer.write(f'{{"id": 1, "method": "status", "pad": "{padding}"}}\n'.encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        reply = json.loads(await asyncio.wait_for(reader.readline(), WAIT_S))
        closed = await asyncio.wait_for(reader.read(), WAIT_S)
        writer.close()
        assert reply["error"]["code"] == "invalid_request"
        assert str(MAX_REQUEST_BYTES) in reply["error"]["message"]
        assert closed == b""
        [after] = await _exchange(server.path, b'{"id": 2, "method": "slots"}\n')
        assert after["id"] == 2


async def test_daemon_exception_reported_as_internal(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, daemon):
        daemon.crash = True
        first, second = await _exchange(
            server.path, b'{"id": 1, "method": "status"}\n', b'{"id": 2, "method": "slots"}\n'
        )
    assert first["error"]["code"] == "internal"
    assert "fake daemon bug" not in first["error"]["message"]
    assert second["id"] == 2


async def test_slow_client_does_not_block_others(tmp_path: Path) -> None:
    async with serving(tmp_path, read_timeout_s=0.5) as (server, _daemon):
        slow_reader, slow_writer = await asyncio.open_unix_connection(str(server.path))
        slow_writer.write(b'{"id": 1, "meth')  # half a request, then nothing
        await slow_writer.drain()

        reply = await asyncio.to_thread(ControlClient(server.path).slots)
        assert len(reply.slots) == 4

        # The stalled client is disconnected after the read timeout.
        assert await asyncio.wait_for(slow_reader.read(), WAIT_S) == b""
        slow_writer.close()


async def test_byte_by_byte_request_served(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _daemon):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        for byte in b'{"id": 3, "method": "bus"}\n':
            writer.write(bytes([byte]))
            await writer.drain()
        reply = json.loads(await asyncio.wait_for(reader.readline(), WAIT_S))
        writer.close()
    assert reply["result"]["crc_errors"] == 4


async def test_client_that_stops_reading_dropped(tmp_path: Path) -> None:
    daemon = FakeDaemon()
    daemon.flood_events = 2000  # about 8 MB, far more than a socket buffer can take
    async with serving(tmp_path, daemon, write_timeout_s=0.3) as (server, _):
        _reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"id": 1, "method": "events", "params": {"follow": true}}\n')
        await writer.drain()
        await asyncio.wait_for(daemon.stream_closed.wait(), WAIT_S)
        [reply] = await _exchange(server.path, b'{"id": 2, "method": "slots"}\n')
        writer.close()
    assert reply["id"] == 2


async def test_events_without_follow_end_with_count(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _daemon):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"id": 4, "method": "events", "params": {"limit": 2}}\n')
        lines = [json.loads(await asyncio.wait_for(reader.readline(), WAIT_S)) for _ in range(3)]
        writer.close()
    assert [line["event"]["seq"] for line in lines[:2]] == [2, 3]
    assert lines[2] == {"id": 4, "result": {"events": 2}}


async def test_follow_streams_until_client_closes(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, daemon):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"id": 5, "method": "events", "params": {"follow": true, "limit": 1}}\n')
        first = json.loads(await asyncio.wait_for(reader.readline(), WAIT_S))
        await asyncio.wait_for(daemon.following.wait(), WAIT_S)
        live = EventRecord(seq=10, at=NOW, kind="fault", slot=3, summary="lock stuck")
        await daemon.live.put(live)
        second = json.loads(await asyncio.wait_for(reader.readline(), WAIT_S))

        writer.close()
        await asyncio.wait_for(daemon.stream_closed.wait(), WAIT_S)
    assert first["event"]["seq"] == 3
    assert second == {"id": 5, "event": live.model_dump(mode="json", by_alias=True)}


async def test_client_reports_no_socket(tmp_path: Path) -> None:
    client = ControlClient(tmp_path / "missing.sock")
    with pytest.raises(DaemonNotRunningError) as caught:
        client.status()
    assert caught.value.reason == "no_socket"
    assert "missing.sock" in str(caught.value)


async def test_client_reports_connection_refused(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    with pytest.raises(DaemonNotRunningError) as caught:
        ControlClient(path).status()
    assert caught.value.reason == "connection_refused"


async def test_client_raises_api_error(tmp_path: Path) -> None:
    async with serving(tmp_path) as (server, _daemon):
        client = ControlClient(server.path)
        with pytest.raises(ApiError) as caught:
            await asyncio.to_thread(client.bank, 42)
    assert caught.value.code is ApiErrorCode.UNKNOWN_SLOT
    assert "42" in caught.value.message


async def test_extra_clients_refused(tmp_path: Path) -> None:
    async with serving(tmp_path, max_clients=1) as (server, _daemon):
        _held_reader, held_writer = await asyncio.open_unix_connection(str(server.path))
        # The held connection counts as a client once the server has replied on it.
        held_writer.write(b'{"id": 1, "method": "slots"}\n')
        await held_writer.drain()
        await asyncio.wait_for(_held_reader.readline(), WAIT_S)

        reader, writer = await asyncio.open_unix_connection(str(server.path))
        reply = json.loads(await asyncio.wait_for(reader.readline(), WAIT_S))
        writer.close()
        held_writer.close()
    assert reply["error"]["code"] == "unavailable"


async def test_close_disconnects_clients(tmp_path: Path) -> None:
    server = ControlServer(FakeDaemon(), tmp_path / "control.sock", None)
    await server.start()
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b'{"id": 1, "method": "slots"}\n')
    await asyncio.wait_for(reader.readline(), WAIT_S)

    await asyncio.wait_for(server.close(), WAIT_S)
    assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
    assert not server.path.exists()
    writer.close()


async def test_long_socket_path_rejected(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(ControlSocketSetupError, match="configure a shorter path"):
        await ControlServer(FakeDaemon(), path, None).start()


async def test_large_reply_read_in_chunks(tmp_path: Path) -> None:
    daemon = FakeDaemon()
    daemon.log_lines = [f"line {index} " + "x" * 1000 for index in range(3000)]  # about 3 MB
    async with serving(tmp_path, daemon) as (server, _):
        bundle = await asyncio.to_thread(ControlClient(server.path).bundle)
    assert bundle.log_lines == daemon.log_lines


async def test_client_reports_connection_closed(tmp_path: Path) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    path = tmp_path / "control.sock"
    server = await asyncio.start_unix_server(hang_up, path=str(path))
    try:
        with pytest.raises(ControlProtocolError, match="closed the connection during status"):
            await asyncio.to_thread(ControlClient(path).status)
    finally:
        server.close()
        await server.wait_closed()
