"""The S1TT slot board emulation, driven through the protocol/s1tt codec."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from cabinet_sim import BankMix, Cabinet, InjectedFault, ManualClock, MonotonicClock, SimConfig
from cabinet_sim.s1tt_boards import S1ttBoards
from cabinet_sim.transports import PtyTransport
from protocol.s1tt import (
    BankFirmware,
    BankInfoRequest,
    BankState,
    BankStatus,
    BankTimeoutError,
    BatteryInfoRequest,
    BoardError,
    BoardInvalidCommandError,
    ChargeRequest,
    Command,
    Empty,
    FirmwareVersion,
    FwuBegin,
    InternalBoardError,
    InvalidArgumentsError,
    LedRequest,
    LinkCounters,
    LinkStats,
    Message,
    PdoRequest,
    SlotRef,
    SlotsReply,
    StatsRequest,
    UnlockStats,
    decode_reply,
    encode_frame,
    encode_request,
    parse_frame,
)
from protocol.slotbus.codes import ChargingState


def s1tt_config(**changes: object) -> SimConfig:
    """A cabinet of 4 S1TT boards (addresses 0..3) of 6 slots that starts without banks."""
    values: dict[str, object] = {"protocol": "s1tt", "banks": BankMix(fill_ratio=0.0)}
    values.update(changes)
    return SimConfig.model_validate(values)


class Host:
    """The host side of the S1TT line, through `Cabinet.receive` and the codec."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet

    @property
    def boards(self) -> S1ttBoards:
        boards = self.cabinet.emulation
        assert isinstance(boards, S1ttBoards)
        return boards

    def raw(self, address: int, command: Command, body: Message) -> list[bytes]:
        request = encode_request(address, command, body)
        return [t.data for t in self.cabinet.receive(request)]

    def call(self, address: int, command: Command, body: Message | None = None) -> Message:
        """Send a request; return the OK reply body or raise the BoardError of its status."""
        replies = self.raw(address, command, body if body is not None else Empty())
        assert len(replies) == 1, f"{command.name} got {len(replies)} replies"
        return decode_reply(parse_frame(replies[0])).body

    def slots(self, address: int = 0) -> SlotsReply:
        reply = self.call(address, Command.SLOTS)
        assert isinstance(reply, SlotsReply)
        return reply

    def status(self, address: int, slot: int) -> BankStatus:
        reply = self.call(address, Command.STATUS, SlotRef(slot))
        assert isinstance(reply, BankStatus)
        return reply


@pytest.fixture
def host() -> Host:
    return Host(Cabinet(s1tt_config(), clock=ManualClock()))


def test_boards_count_from_zero(host: Host) -> None:
    assert list(host.cabinet.boards) == [0, 1, 2, 3]
    assert host.raw(4, Command.SLOTS, Empty()) == []


def test_slots_masks(host: Host) -> None:
    host.cabinet.insert_bank(2, charge=50)  # board 0, wire slot 1
    host.cabinet.insert_bank(8, charge=50)  # board 1, wire slot 1
    host.cabinet.advance(0.3)
    reply = host.slots(0)
    assert reply.filled_mask == 0b000010
    assert reply.lock_mask == 0
    assert [bits.filled for bits in reply.slots] == [False, True, False, False, False, False]
    assert all(bits.locked for bits in reply.slots)
    assert host.slots(1).filled_mask == 0b000010


def test_status_of_a_bank(host: Host) -> None:
    bank = host.cabinet.insert_bank(3, charge=60, capacity_mah=5000)
    host.cabinet.advance(0.3)
    status = host.status(0, 2)
    assert status.serial == bank.bank_id[-5:].hex().upper()
    assert status.total_charge_mah == 5000
    assert status.cutoff_charge_mah == 250
    percent = (status.current_charge_mah - 250) / (5000 - 250) * 100
    assert percent == pytest.approx(bank.charge, abs=0.1)
    assert status.state is BankState.CHARGING
    assert status.average_capacity_mah == 5000


def test_status_errors(host: Host) -> None:
    with pytest.raises(BankTimeoutError):
        host.call(0, Command.STATUS, SlotRef(0))  # empty slot
    with pytest.raises(InvalidArgumentsError):
        host.call(0, Command.STATUS, SlotRef(6))
    host.cabinet.insert_bank(1, readable=False)
    host.cabinet.advance(0.3)
    with pytest.raises(BankTimeoutError):
        host.call(0, Command.STATUS, SlotRef(0))


def test_status_shows_cutoff_when_overheated(host: Host) -> None:
    host.cabinet.insert_bank(1, charge=50)
    host.cabinet.advance(0.3)
    host.cabinet.set_temperature(1, 70.0)
    host.cabinet.advance(1.0)
    assert host.status(0, 0).state is BankState.CUTOFF


def test_set_charge(host: Host) -> None:
    host.cabinet.insert_bank(1, charge=50)
    host.cabinet.advance(0.3)
    assert host.call(0, Command.SET_CHARGE, ChargeRequest(0, False)) == Empty()
    assert host.cabinet.slot(1).charging is ChargingState.OFF
    assert host.status(0, 0).state is BankState.PLUGGED_IN
    host.call(0, Command.SET_CHARGE, ChargeRequest(0, True))
    assert host.cabinet.slot(1).charging is ChargingState.CHARGING


def test_set_charge_with_broken_charger(host: Host) -> None:
    host.cabinet.set_fault(1, InjectedFault.CHARGER)
    with pytest.raises(InternalBoardError):
        host.call(0, Command.SET_CHARGE, ChargeRequest(0, True))
    assert host.call(0, Command.SET_CHARGE, ChargeRequest(0, False)) == Empty()


def test_reset_bank(host: Host) -> None:
    with pytest.raises(BankTimeoutError):
        host.call(0, Command.RESET, SlotRef(0))
    host.cabinet.insert_bank(1)
    host.cabinet.advance(0.3)
    assert host.call(0, Command.RESET, SlotRef(0)) == Empty()


def test_set_pdo_and_led(host: Host) -> None:
    assert host.call(0, Command.SET_PDO, PdoRequest(1, 9, 3)) == Empty()
    assert host.boards.states[0].pdo == {1: (9, 3)}
    assert host.call(0, Command.SET_LED, LedRequest(4, True)) == Empty()
    assert host.boards.states[0].leds == {4}
    host.call(0, Command.SET_LED, LedRequest(4, False))
    assert host.boards.states[0].leds == set()
    with pytest.raises(InvalidArgumentsError):
        host.call(0, Command.SET_LED, LedRequest(6, True))


def test_unlock_opens_lock(host: Host) -> None:
    host.cabinet.insert_bank(4)
    host.cabinet.advance(0.3)
    assert host.call(0, Command.UNLOCK, SlotRef(3)) == Empty()
    assert host.slots(0).lock_mask == 0b001000
    host.cabinet.take(4)
    host.cabinet.advance(3.0)
    reply = host.slots(0)
    assert reply.filled_mask == 0
    with pytest.raises(InvalidArgumentsError):
        host.call(0, Command.UNLOCK, SlotRef(9))


def test_double_unlock_opens_twice(host: Host) -> None:
    host.cabinet.insert_bank(4)
    host.cabinet.advance(0.3)
    host.call(0, Command.UNLOCK, SlotRef(3))
    host.cabinet.take(4)
    host.cabinet.advance(31.0)
    assert host.slots(0).lock_mask == 0  # the latch returned
    # A repeat after a lost reply has no token to stop it: the lock opens again.
    host.call(0, Command.UNLOCK, SlotRef(3))
    assert host.slots(0).lock_mask == 0b001000
    stats = host.call(0, Command.UNLOCK_STATS, StatsRequest(False))
    assert isinstance(stats, UnlockStats)
    assert stats.slots[3].unlocks == 2


def test_unlock_of_stuck_lock_replies_ok(host: Host) -> None:
    host.cabinet.insert_bank(1)
    host.cabinet.advance(0.3)
    host.cabinet.set_fault(1, InjectedFault.LOCK_STUCK)
    assert host.call(0, Command.UNLOCK, SlotRef(0)) == Empty()
    assert host.slots(0).lock_mask == 0


def test_bank_info_written(host: Host) -> None:
    host.cabinet.insert_bank(2)
    host.cabinet.advance(0.3)
    info = BankInfoRequest(1, "TT00000042", 1_700_000_000, 12)
    assert host.call(0, Command.SET_BANK_INFO, info) == Empty()
    status = host.status(0, 1)
    assert status.serial == "TT00000042"
    assert status.manufactured_at == 1_700_000_000
    assert status.cycles == 12


def test_battery_info_written(host: Host) -> None:
    host.cabinet.insert_bank(2)
    host.cabinet.advance(0.3)
    host.call(0, Command.SET_CHARGE, ChargeRequest(1, False))
    battery = BatteryInfoRequest(1, 6000, 3500, 1000)
    assert host.call(0, Command.SET_BATTERY_INFO, battery) == Empty()
    status = host.status(0, 1)
    assert status.total_charge_mah == 6000
    assert status.cutoff_charge_mah == 1000
    assert status.current_charge_mah == pytest.approx(3500, abs=2)
    with pytest.raises(InvalidArgumentsError):
        host.call(0, Command.SET_BATTERY_INFO, BatteryInfoRequest(1, 1000, 500, 2000))


def test_firmware_versions(host: Host) -> None:
    reply = host.call(2, Command.FIRMWARE_VERSION)
    assert reply == FirmwareVersion("sim-1.0.0")
    host.cabinet.insert_bank(1)
    host.cabinet.advance(0.3)
    bank_firmware = host.call(0, Command.BANK_FIRMWARE, SlotRef(0))
    assert isinstance(bank_firmware, BankFirmware)
    assert bank_firmware.name == "sim-bank"


def test_link_stats_count_and_reset(host: Host) -> None:
    host.cabinet.insert_bank(1)
    host.cabinet.advance(0.3)
    host.status(0, 0)
    with pytest.raises(BankTimeoutError):
        host.call(0, Command.STATUS, SlotRef(1))
    stats = host.call(0, Command.LINK_STATS, StatsRequest(True))
    assert isinstance(stats, LinkStats)
    assert stats.slots[0] == LinkCounters(1, 0, 0)
    assert stats.slots[1] == LinkCounters(1, 2, 1)
    cleared = host.call(0, Command.LINK_STATS, StatsRequest(False))
    assert isinstance(cleared, LinkStats)
    assert cleared.slots[1] == LinkCounters(0, 0, 0)


def test_firmware_update_not_implemented(host: Host) -> None:
    with pytest.raises(BoardInvalidCommandError):
        host.call(0, Command.FWU_BEGIN, FwuBegin(1024, 0, 1))
    with pytest.raises(BoardInvalidCommandError):
        host.call(0, Command.BANK_ENTER_BOOT, SlotRef(0))


def test_unknown_command_and_bad_length(host: Host) -> None:
    (unknown,) = [t.data for t in host.cabinet.receive(encode_frame(0, b"\x7f"))]
    with pytest.raises(BoardInvalidCommandError):
        decode_reply(parse_frame(unknown))
    (short,) = [t.data for t in host.cabinet.receive(encode_frame(0, b"\x01"))]
    with pytest.raises(InvalidArgumentsError):
        decode_reply(parse_frame(short))


def test_error_statuses_are_one_to_four(host: Host) -> None:
    statuses = set()
    requests = [
        encode_request(0, Command.STATUS, SlotRef(0)),
        encode_frame(0, b"\x7f"),
        encode_request(0, Command.STATUS, SlotRef(7)),
    ]
    host.cabinet.set_fault(1, InjectedFault.CHARGER)
    requests.append(encode_request(0, Command.SET_CHARGE, ChargeRequest(0, True)))
    for request in requests:
        (reply,) = host.cabinet.receive(request)
        try:
            decode_reply(parse_frame(reply.data))
        except BoardError as exc:
            statuses.add(int(exc.status))
    assert statuses == {1, 2, 3, 4}


def test_request_split_across_chunks(host: Host) -> None:
    request = encode_request(0, Command.SLOTS, Empty())
    assert host.cabinet.receive(request[:3]) == []
    assert host.cabinet.receive(b"") == []
    (reply,) = host.cabinet.receive(request[3:])
    assert isinstance(decode_reply(parse_frame(reply.data)).body, SlotsReply)


def test_garbage_before_request(host: Host) -> None:
    request = encode_request(1, Command.SLOTS, Empty())
    (reply,) = host.cabinet.receive(b"\x00\xea\x13" + request)
    assert parse_frame(reply.data).address == 1


def test_two_requests_two_transmissions(host: Host) -> None:
    first = encode_request(0, Command.SLOTS, Empty())
    second = encode_request(1, Command.FIRMWARE_VERSION, Empty())
    replies = host.cabinet.receive(first + second)
    assert [parse_frame(t.data).address for t in replies] == [0, 1]
    assert replies[1].delay_s > replies[0].delay_s


def test_silent_and_rebooting_board(host: Host) -> None:
    host.cabinet.set_board_silent(2)
    assert host.raw(2, Command.SLOTS, Empty()) == []
    assert len(host.raw(1, Command.SLOTS, Empty())) == 1
    host.cabinet.set_board_silent(2, False)
    host.cabinet.power_cycle(2)
    assert host.raw(2, Command.SLOTS, Empty()) == []
    host.cabinet.advance(0.5)
    assert len(host.raw(2, Command.SLOTS, Empty())) == 1


def test_line_faults(host: Host) -> None:
    request = encode_request(0, Command.SLOTS, Empty())
    host.cabinet.link.local_echo = True
    echo, reply = host.cabinet.receive(request)
    assert echo.echo
    assert echo.data == request
    assert parse_frame(reply.data).address == 0
    host.cabinet.link.local_echo = False

    host.cabinet.link.late_response_rate = 1.0
    (late,) = host.cabinet.receive(request)
    assert late.delay_s >= host.cabinet.link.late_response_delay_s
    host.cabinet.link.late_response_rate = 0.0

    host.cabinet.insert_bank(1)
    host.cabinet.advance(0.3)
    host.cabinet.link.drop_response_rate = 1.0
    assert host.raw(0, Command.UNLOCK, SlotRef(0)) == []
    host.cabinet.link.drop_response_rate = 0.0
    assert host.slots(0).lock_mask == 1  # the board acted although its reply was lost

    host.cabinet.port_down()
    assert host.cabinet.receive(request) == []
    host.cabinet.port_up()
    assert len(host.cabinet.receive(request)) == 1


def test_corrupted_request_not_answered(host: Host) -> None:
    host.cabinet.link.corrupt_byte_rate = 1.0
    assert host.cabinet.receive(encode_request(0, Command.SLOTS, Empty())) == []


def test_same_seed_same_bytes() -> None:
    def run() -> list[bytes]:
        cabinet = Cabinet(SimConfig(protocol="s1tt", seed=5), clock=ManualClock())
        host = Host(cabinet)
        out: list[bytes] = []
        for address in range(4):
            out += host.raw(address, Command.SLOTS, Empty())
            for slot in range(6):
                out += host.raw(address, Command.STATUS, SlotRef(slot))
        cabinet.advance(600.0)
        return out + host.raw(0, Command.STATUS, SlotRef(0))

    assert run() == run()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 4]),
            st.one_of(st.sampled_from(list(Command)), st.integers(0, 0xFF)),
            st.binary(max_size=40),
            st.floats(0, 40),
        ),
        max_size=20,
    )
)
def test_any_request_gets_a_protocol_reply(requests: list[tuple[int, int, bytes, float]]) -> None:
    cabinet = Cabinet(s1tt_config(boards=2), clock=ManualClock())
    cabinet.insert_bank(1, charge=50)
    cabinet.insert_bank(2, readable=False)
    cabinet.advance(0.3)
    for address, command, payload, pause_s in requests:
        replies = cabinet.receive(encode_frame(address, bytes((command,)) + payload))
        cabinet.advance(pause_s)
        if address not in cabinet.boards:
            assert replies == []
            continue
        (reply,) = replies
        frame = parse_frame(reply.data)
        assert frame.address == address
        assert frame.command_id == command
        with contextlib.suppress(BoardError):
            decode_reply(frame)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    cabinet = Cabinet(s1tt_config(boards=2), clock=ManualClock())
    for transmission in cabinet.receive(data):
        assert parse_frame(transmission.data).address in (0, 1)


def test_config_rejects_large_boards() -> None:
    with pytest.raises(ValueError, match="at most 6 slots"):
        SimConfig(protocol="s1tt", slots_per_board=8)


def _pyserial_exchange(path: str, request: bytes, size: int) -> bytes:
    with serial.Serial(path, 115200, timeout=2.0) as port:
        port.write(request)
        return bytes(port.read(size))


async def test_pty_round_trip() -> None:
    cabinet = Cabinet(s1tt_config(), clock=MonotonicClock())
    request = encode_request(3, Command.SLOTS, Empty())
    async with PtyTransport(cabinet) as pty:
        received = await asyncio.to_thread(_pyserial_exchange, pty.device_path, request, 8)
    reply = decode_reply(parse_frame(received))
    assert reply.address == 3
    assert reply.body == SlotsReply(0, 0)
