"""The GZXJ station emulation, driven through the protocol/gzxj codec."""

from __future__ import annotations

import asyncio

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from cabinet_sim import (
    BankMix,
    Cabinet,
    InjectedFault,
    ManualClock,
    MonotonicClock,
    SimConfig,
    SimulationError,
    Transmission,
)
from cabinet_sim.control import Controller
from cabinet_sim.gzxj_station import GzxjStation
from cabinet_sim.transports import MemoryLink, PtyTransport
from protocol.gzxj import (
    Command,
    Deframer,
    ForceUnlockReply,
    ForceUnlockRequest,
    Frame,
    Message,
    QueryRequest,
    RentConfirm,
    RentReply,
    RentRequest,
    RentResult,
    RentSlotRequest,
    ReturnConfirm,
    ReturnReport,
    RulesReply,
    RulesRequest,
    SlotReport,
    decode_text,
    encode_frame,
    encode_message,
)


def gzxj_config(**changes: object) -> SimConfig:
    """A 4 x 6 GZXJ cabinet that starts without banks."""
    values: dict[str, object] = {"protocol": "gzxj", "banks": BankMix(fill_ratio=0.0)}
    values.update(changes)
    return SimConfig.model_validate(values)


class Host:
    """The host side of the GZXJ line, through `Cabinet.receive` and the codec."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self.message_id = 0
        self.unsolicited: list[Transmission] = []
        cabinet.subscribe_unsolicited(self.unsolicited.append)

    @property
    def station(self) -> GzxjStation:
        station = self.cabinet.emulation
        assert isinstance(station, GzxjStation)
        return station

    def next_id(self) -> int:
        self.message_id += 1
        return self.message_id

    def send(self, command: Command, body: Message) -> list[Transmission]:
        return self.cabinet.receive(encode_message(command, body).encode("ascii"))

    def call(self, command: Command, body: Message) -> Message:
        """Send a request and return the decoded body of the one reply."""
        transmissions = self.send(command, body)
        assert len(transmissions) == 1, f"{command} got {len(transmissions)} replies"
        return decode_text(transmissions[0].data.decode("ascii")).body

    def query(self, slot: int = 0) -> SlotReport:
        report = self.call(Command.CQ, QueryRequest(self.next_id(), slot))
        assert isinstance(report, SlotReport)
        return report

    def rent(self, order_id: int, slot: int | None = None) -> RentReply:
        if slot is None:
            reply = self.call(Command.BW, RentRequest(self.next_id(), order_id))
        else:
            reply = self.call(Command.FB, RentSlotRequest(self.next_id(), order_id, slot))
        assert isinstance(reply, RentReply)
        return reply

    def pop_unsolicited(self) -> list[Message]:
        bodies = [decode_text(t.data.decode("ascii")).body for t in self.unsolicited]
        self.unsolicited.clear()
        return bodies

    def return_bank(self, slot: int, charge: float) -> str:
        """Insert a bank, wait for its RS report, confirm it, and return its GZXJ id."""
        self.cabinet.insert_bank(slot, charge=charge)
        self.cabinet.advance(0.3)
        reports = [m for m in self.pop_unsolicited() if isinstance(m, ReturnReport)]
        assert len(reports) == 1
        assert reports[0].bank_id is not None
        assert self.send(Command.RS, ReturnConfirm(self.next_id(), slot, reports[0].bank_id)) == []
        return reports[0].bank_id


@pytest.fixture
def host() -> Host:
    return Host(Cabinet(gzxj_config(), clock=ManualClock()))


def test_query_reports_every_slot(host: Host) -> None:
    bank_id = host.return_bank(3, charge=70)
    report = host.query()
    assert report.slot_count == 24
    assert [record.slot for record in report.slots] == list(range(1, 25))
    record = report.slots[2]
    assert record.bank_id == bank_id
    assert record.charge == 70
    assert record.confirmed
    assert record.in_contact
    assert record.locked
    assert report.slots[0].bank_id is None
    assert not report.slots[0].in_contact


def test_query_one_slot(host: Host) -> None:
    assert [record.slot for record in host.query(5).slots] == [5]
    assert host.query(30).slots == ()


def test_station_message_ids_increase(host: Host) -> None:
    ids = [host.query().message_id for _ in range(3)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3


def test_unsolicited_report_every_three_minutes(host: Host) -> None:
    host.cabinet.advance(179.0)
    assert host.pop_unsolicited() == []
    host.cabinet.advance(1.0)
    first = host.pop_unsolicited()
    assert len(first) == 1
    assert isinstance(first[0], SlotReport)
    host.cabinet.advance(180.0)
    second = host.pop_unsolicited()
    assert len(second) == 1
    assert isinstance(second[0], SlotReport)
    assert second[0].message_id > first[0].message_id


def test_rent_picks_fullest_bank(host: Host) -> None:
    host.return_bank(2, charge=85)
    fullest = host.return_bank(7, charge=95)
    host.return_bank(9, charge=70)
    reply = host.rent(1001)
    assert reply.result is RentResult.OK
    assert reply.slot == 7
    assert reply.bank_id == fullest
    assert host.cabinet.slot(7).window is not None
    assert host.cabinet.slot(2).window is None


def test_rent_respects_rules_threshold(host: Host) -> None:
    host.return_bank(2, charge=85)
    reply = host.call(Command.CM, RulesRequest(host.next_id(), 90, True, True))
    assert isinstance(reply, RulesReply)
    assert reply.accepted
    rejected = host.rent(1002)
    assert rejected.result is RentResult.NO_BANK
    assert rejected.slot == 0
    assert rejected.bank_id is None
    host.call(Command.CM, RulesRequest(host.next_id(), 85, True, True))
    assert host.rent(1003).slot == 2


def test_rent_skips_unconfirmed_return(host: Host) -> None:
    host.cabinet.insert_bank(4, charge=99)
    host.cabinet.advance(0.3)
    assert host.rent(1004).result is RentResult.NO_BANK


def test_rent_from_named_slot(host: Host) -> None:
    bank_id = host.return_bank(4, charge=90)
    host.return_bank(5, charge=40)
    reply = host.rent(2001, slot=4)
    assert reply.result is RentResult.OK
    assert reply.slot == 4
    assert reply.bank_id == bank_id
    assert host.rent(2002, slot=5).result is RentResult.NO_BANK  # below 80 %
    assert host.rent(2003, slot=6).result is RentResult.NO_BANK  # empty
    assert host.rent(2004, slot=40).result is RentResult.NO_BANK  # no such slot


def test_repeated_order_gets_cached_reply(host: Host) -> None:
    host.return_bank(4, charge=90)
    host.return_bank(5, charge=95)
    first = host.send(Command.FB, RentSlotRequest(host.next_id(), 3001, 4))
    host.cabinet.take(4)
    again = host.send(Command.FB, RentSlotRequest(host.next_id(), 3001, 4))
    as_bw = host.send(Command.BW, RentRequest(host.next_id(), 3001))
    assert again[0].data == first[0].data
    assert as_bw[0].data == first[0].data
    assert host.cabinet.slot(4).window is None
    assert host.cabinet.slot(5).window is None  # the BW repeat did not open another slot
    assert host.station.stats.cached_replies == 2


def test_cached_reply_ignores_message_id(host: Host) -> None:
    host.return_bank(4, charge=90)
    first = host.send(Command.BW, RentRequest(50, 3002))
    assert host.send(Command.BW, RentRequest(50, 3002))[0].data == first[0].data


def test_rent_confirmation_is_recorded(host: Host) -> None:
    host.return_bank(4, charge=90)
    host.rent(4001)
    assert host.send(Command.BR, RentConfirm(host.next_id(), 4001, 4)) == []
    assert host.station.orders[4001].confirmed


def test_rent_results_for_lock_faults(host: Host) -> None:
    host.return_bank(4, charge=90)
    host.return_bank(5, charge=85)
    host.cabinet.set_fault(4, InjectedFault.LOCK_STUCK)
    stuck = host.rent(5001)
    assert stuck.result is RentResult.LOCK_ABNORMAL
    assert stuck.slot == 4
    assert host.cabinet.slot(4).window is None
    # The stuck lock is now known, so the next rent skips slot 4.
    assert host.rent(5002).slot == 5


def test_rent_timeout_with_broken_lock_sensor(host: Host) -> None:
    host.return_bank(4, charge=90)
    host.cabinet.set_fault(4, InjectedFault.LOCK_SENSOR)
    host.call(Command.CM, RulesRequest(host.next_id(), 80, False, True))
    transmissions = host.send(Command.FB, RentSlotRequest(host.next_id(), 5003, 4))
    reply = decode_text(transmissions[0].data.decode()).body
    assert isinstance(reply, RentReply)
    assert reply.result is RentResult.TIMEOUT
    assert transmissions[0].delay_s >= host.cabinet.config.gzxj.rent_timeout_s
    assert host.cabinet.slot(4).window is not None  # the lock did open


def test_return_report_repeats_until_confirmed(host: Host) -> None:
    bank = host.cabinet.insert_bank(6, charge=30)
    host.cabinet.advance(0.3)
    host.cabinet.advance(10.0)
    reports = [m for m in host.pop_unsolicited() if isinstance(m, ReturnReport)]
    assert len(reports) == 2
    assert reports[0].message_id < reports[1].message_id
    assert reports[0].bank_id == bank.bank_id.hex().upper()
    assert reports[0].charge in (29, 30)  # self-discharge may take it just below 30 %
    assert not host.query(6).slots[0].confirmed
    host.send(Command.RS, ReturnConfirm(host.next_id(), 6, "FFFF"))  # wrong bank
    host.cabinet.advance(10.0)
    assert len(host.pop_unsolicited()) == 1
    host.send(Command.RS, ReturnConfirm(host.next_id(), 6, reports[0].bank_id))
    host.cabinet.advance(60.0)
    assert host.pop_unsolicited() == []
    assert host.query(6).slots[0].confirmed


def test_unreadable_return_reports_null(host: Host) -> None:
    host.cabinet.insert_bank(6, readable=False)
    host.cabinet.advance(0.3)
    (report,) = host.pop_unsolicited()
    assert isinstance(report, ReturnReport)
    assert report.bank_id is None
    assert report.charge == 0
    host.send(Command.RS, ReturnConfirm(host.next_id(), 6, None))
    assert 6 not in host.station.returns


def test_take_clears_confirmed_flag(host: Host) -> None:
    host.return_bank(4, charge=90)
    host.rent(6001)
    host.cabinet.take(4)
    host.cabinet.advance(3.0)
    record = host.query(4).slots[0]
    assert record.bank_id is None
    assert not record.confirmed


def test_force_unlock_one_and_all(host: Host) -> None:
    host.return_bank(2, charge=10)
    reply = host.call(Command.FA, ForceUnlockRequest(host.next_id(), 2))
    assert isinstance(reply, ForceUnlockReply)
    assert reply.slot == 2
    assert reply.result is RentResult.OK
    assert host.cabinet.slot(2).window is not None
    host.cabinet.set_fault(9, InjectedFault.LOCK_STUCK)
    every = host.call(Command.FA, ForceUnlockRequest(host.next_id(), 0))
    assert isinstance(every, ForceUnlockReply)
    assert every.result is RentResult.LOCK_ABNORMAL
    assert host.cabinet.slot(1).window is not None
    assert host.cabinet.slot(9).window is None
    unknown = host.call(Command.FA, ForceUnlockRequest(host.next_id(), 30))
    assert isinstance(unknown, ForceUnlockReply)
    assert unknown.result is RentResult.NO_BANK


def test_stale_message_id_ignored(host: Host) -> None:
    host.query()
    host.message_id = 0
    assert host.send(Command.CQ, QueryRequest(1, 0)) == []
    assert host.station.stats.stale_message_ids == 1
    assert len(host.send(Command.CQ, QueryRequest(0, 0))) == 1  # 0 is always accepted


def test_station_layouts_from_host_ignored(host: Host) -> None:
    assert host.send(Command.RS, ReturnReport(host.next_id(), 1, None, 0)) == []
    assert host.send(Command.CQ, QueryRequest(host.next_id(), 0))  # still answering
    assert host.station.stats.ignored == 1


def test_watchdog_resets_silent_host(host: Host) -> None:
    host.return_bank(4, charge=90)
    host.rent(7001, slot=4)
    host.cabinet.advance(599.0)
    assert host.station.stats.resets == 0
    host.pop_unsolicited()
    host.cabinet.advance(1.0)
    assert host.station.stats.resets == 1
    host.cabinet.advance(0.5)
    (boot_report,) = host.pop_unsolicited()
    assert isinstance(boot_report, SlotReport)
    assert boot_report.message_id == 1
    # The order cache is gone, so the same order id opens the slot again.
    assert host.cabinet.slot(4).window is None
    assert host.rent(7001, slot=4).result is RentResult.OK
    assert host.station.stats.cached_replies == 0
    assert host.cabinet.slot(4).window is not None


def test_regular_polling_prevents_reset(host: Host) -> None:
    for _ in range(4):
        host.cabinet.advance(300.0)
        host.query()
    assert host.station.stats.resets == 0


def test_reset_keeps_unconfirmed_return(host: Host) -> None:
    host.cabinet.insert_bank(6, charge=30)
    host.cabinet.advance(0.3)
    host.cabinet.power_cycle(0)
    host.pop_unsolicited()
    host.cabinet.advance(10.0)
    assert any(isinstance(m, ReturnReport) for m in host.pop_unsolicited())


def test_silent_station(host: Host) -> None:
    host.cabinet.set_board_silent(0)
    assert host.send(Command.CQ, QueryRequest(host.next_id(), 0)) == []
    host.cabinet.advance(180.0)
    assert host.pop_unsolicited() == []
    host.cabinet.set_board_silent("0", False)
    assert len(host.send(Command.CQ, QueryRequest(host.next_id(), 0))) == 1
    with pytest.raises(SimulationError):
        host.cabinet.set_board_silent(1)


def test_control_commands_reach_station(host: Host) -> None:
    controller = Controller(host.cabinet)
    controller.execute("board 0 silent")
    assert host.station.silent
    controller.execute("board 0 answer")
    controller.execute("board 0 reboot")
    assert host.station.stats.resets == 1


def test_line_faults(host: Host) -> None:
    host.cabinet.link.local_echo = True
    request = encode_message(Command.CQ, QueryRequest(host.next_id(), 0)).encode()
    echo, reply = host.cabinet.receive(request)
    assert echo.echo
    assert echo.data == request
    assert isinstance(decode_text(reply.data.decode()).body, SlotReport)
    host.cabinet.link.local_echo = False

    host.cabinet.link.late_response_rate = 1.0
    (late,) = host.send(Command.CQ, QueryRequest(host.next_id(), 0))
    assert late.delay_s >= host.cabinet.link.late_response_delay_s
    host.cabinet.link.late_response_rate = 0.0

    host.cabinet.link.drop_response_rate = 1.0
    assert host.send(Command.CQ, QueryRequest(host.next_id(), 0)) == []
    host.cabinet.advance(180.0)
    assert host.pop_unsolicited() == []
    host.cabinet.link.drop_response_rate = 0.0

    host.cabinet.port_down()
    assert host.send(Command.CQ, QueryRequest(host.next_id(), 0)) == []
    host.cabinet.port_up()
    assert len(host.send(Command.CQ, QueryRequest(host.next_id(), 0))) == 1


def test_corrupted_bytes_fail_the_crc(host: Host) -> None:
    host.cabinet.link.corrupt_byte_rate = 1.0
    assert host.send(Command.CQ, QueryRequest(host.next_id(), 0)) == []
    assert host.station.stats.frames == 0


FIELD = st.text(alphabet="0123456789ABCDEFNUL:.", max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["0", "1"]),
            st.sampled_from([*Command, "ZZ"]),
            st.lists(FIELD, max_size=6),
            st.floats(0, 200),
        ),
        max_size=20,
    )
)
def test_any_frame_gets_protocol_reply(
    frames: list[tuple[str, str, list[str], float]],
) -> None:
    cabinet = Cabinet(gzxj_config(), clock=ManualClock())
    host = Host(cabinet)
    for address, command, fields, pause_s in frames:
        for transmission in cabinet.receive(encode_frame(address, command, fields).encode()):
            decoded = decode_text(transmission.data.decode("ascii"))
            assert decoded.address == "0"
        cabinet.advance(pause_s)
    for transmission in host.unsolicited:
        assert decode_text(transmission.data.decode("ascii")).address == "0"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    cabinet = Cabinet(gzxj_config(), clock=ManualClock())
    for transmission in cabinet.receive(data):
        assert decode_text(transmission.data.decode("ascii")).address == "0"


def test_same_seed_same_bytes() -> None:
    def run() -> list[bytes]:
        cabinet = Cabinet(SimConfig(protocol="gzxj", seed=11), clock=ManualClock())
        host = Host(cabinet)
        out = [t.data for t in host.send(Command.BW, RentRequest(1, 1))]
        cabinet.advance(400.0)
        out += [t.data for t in host.send(Command.CQ, QueryRequest(2, 0))]
        return out + [t.data for t in host.unsolicited]

    assert run() == run()


async def test_unsolicited_report_over_memory_link() -> None:
    config = gzxj_config(gzxj={"report_interval_s": 5.0})
    cabinet = Cabinet(config, clock=MonotonicClock(speed=50.0))
    async with MemoryLink(cabinet) as link:
        reader, writer = await link.open_master_streams()
        deframer = Deframer()
        frames: list[Frame] = []
        while not frames:
            frames = deframer.feed(await asyncio.wait_for(reader.read(4096), 2.0))
        assert frames[0].command == "AC"
        writer.close()


def _pyserial_query(path: str) -> bytes:
    with serial.Serial(path, 115200, timeout=2.0) as port:
        port.write(encode_message(Command.CQ, QueryRequest(1, 0)).encode() + b"\r\n")
        return bytes(port.read_until(b"}"))


async def test_pty_round_trip() -> None:
    cabinet = Cabinet(gzxj_config(), clock=MonotonicClock())
    async with PtyTransport(cabinet) as pty:
        received = await asyncio.to_thread(_pyserial_query, pty.device_path)
    report = decode_text(received.decode("ascii")).body
    assert isinstance(report, SlotReport)
    assert report.slot_count == 24
