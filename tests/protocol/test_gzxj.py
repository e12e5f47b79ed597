"""GZXJ codec: command table, layouts, frames and CRC, the deframer and the mapping."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol.cabinet import EjectFailReason, EjectOutcome, EjectRejectReason, FaultKind, SlotState
from protocol.gzxj import (
    COMMANDS,
    ChecksumError,
    Command,
    Deframer,
    FrameError,
    GzxjError,
    Message,
    PayloadError,
    QueryRequest,
    RentReply,
    RentResult,
    RentSlotRequest,
    Role,
    SlotRecord,
    SlotReport,
    UnknownCommandError,
    checksum,
    decode_text,
    encode_frame,
    encode_message,
    parse_frame,
)
from protocol.gzxj import fields as codecs
from protocol.gzxj.constants import MAX_FRAME
from protocol.gzxj.mapping import RENT_RESULTS, rent_result, slot_faults, slot_state

DOC = (Path(__file__).parents[2] / "docs" / "protocol-gzxj.md").read_text(encoding="utf-8")

_TOKENS = st.from_regex(r"[0-9A-Za-z._\-]{1,12}", fullmatch=True)


def _value(codec: codecs.FieldCodec) -> st.SearchStrategy[Any]:
    if isinstance(codec, codecs.Int):
        if isinstance(codec.convert, enum.EnumMeta):
            return st.sampled_from(list(codec.convert))
        return st.integers(codec.minimum, codec.maximum)
    if isinstance(codec, codecs.Flag):
        return st.booleans()
    if isinstance(codec, codecs.Token):
        return _TOKENS
    if isinstance(codec, codecs.BankId):
        return st.none() | _TOKENS.filter(lambda token: token != "NULL")
    if isinstance(codec, codecs.Records):
        return st.lists(slot_records, max_size=codec.max_count).map(tuple)
    raise TypeError(f"no strategy for {codec!r}")


slot_records = st.builds(
    SlotRecord,
    slot=st.integers(1, 48),
    confirmed=st.booleans(),
    bank_id=st.none() | _TOKENS.filter(lambda token: token != "NULL"),
    charge=st.integers(0, 100),
    charging=st.booleans(),
    in_contact=st.booleans(),
    locked=st.booleans(),
)


def messages(layout: type[Message]) -> st.SearchStrategy[Message]:
    """Draw any valid instance of a layout."""
    return st.builds(layout, **{name: _value(codec) for name, codec in layout.FIELDS})


commands = st.sampled_from(list(Command))
addresses = st.from_regex(r"[0-9A-Za-z]{1,3}", fullmatch=True)


@st.composite
def wire_frames(draw: st.DrawFn) -> str:
    """Draw the text of any valid request or reply."""
    command = draw(commands)
    spec = COMMANDS[command]
    layouts = [spec.request] if spec.reply is None else [spec.request, spec.reply]
    layout = draw(st.sampled_from(layouts))
    return encode_message(command, draw(messages(layout)), draw(addresses))


def _crc16_modbus_bitwise(data: bytes) -> int:
    """CRC-16/MODBUS computed bit by bit, independent of protocol.crc's table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _deframe(chunks: list[bytes]) -> list[str]:
    deframer = Deframer()
    found = []
    for chunk in chunks:
        found += [frame.encode() for frame in deframer.feed(chunk)]
    return found


# Command table -------------------------------------------------------------------------


def test_command_words_unique() -> None:
    words = [command.value for command in Command]
    assert len(words) == len(set(words))
    assert set(COMMANDS) == set(Command)


@pytest.mark.parametrize("command", list(Command), ids=str)
def test_every_command_has_doc_section(command: Command) -> None:
    assert re.search(rf"^### {command.value} ", DOC, re.MULTILINE), f"no section for {command}"
    assert f"| `{command.value}` |" in DOC


@pytest.mark.parametrize("result", list(RentResult))
def test_every_rent_result_in_doc(result: RentResult) -> None:
    assert f"| {result.value} | {result.name} |" in DOC


@pytest.mark.parametrize("command", list(Command), ids=str)
def test_request_and_reply_field_counts_differ(command: Command) -> None:
    spec = COMMANDS[command]
    if spec.reply is not None:
        assert spec.request.field_count() != spec.reply.field_count()


@pytest.mark.parametrize("command", list(Command), ids=str)
@settings(max_examples=15)
@given(data=st.data())
def test_every_command_round_trips(command: Command, data: st.DataObject) -> None:
    spec = COMMANDS[command]
    address = data.draw(addresses)
    request = data.draw(messages(spec.request))

    decoded = decode_text(encode_message(command, request, address))
    assert decoded.body == request
    assert decoded.role is Role.REQUEST
    assert decoded.address == address
    assert decoded.spec.command is command

    if spec.reply is not None:
        reply = data.draw(messages(spec.reply))
        decoded = decode_text(encode_message(command, reply, address))
        assert decoded.body == reply
        assert decoded.role is Role.REPLY


def test_encode_rejects_wrong_layout() -> None:
    with pytest.raises(PayloadError, match="CQ does not carry RentReply"):
        encode_message(Command.CQ, RentReply(1, 2, RentResult.OK, 1, None))


def test_out_of_range_value_rejected() -> None:
    with pytest.raises(PayloadError, match=r"slot: 49 is outside 1\.\.48"):
        encode_message(Command.FB, RentSlotRequest(1, 2, 49))


# Frames and CRC --------------------------------------------------------------------------


def test_query_example_frame_by_hand() -> None:
    # The public driver sends CQ with fields 0 and 0. The CRC covers "CQ,0,0," followed by
    # the key "GZXJ": CRC-16/MODBUS of "CQ,0,0,GZXJ" is 0x5436.
    assert _crc16_modbus_bitwise(b"CQ,0,0,GZXJ") == 0x5436
    assert encode_message(Command.CQ, QueryRequest(0, 0)) == "{0@CQ,0,0,5436}"
    assert "{0@CQ,0,0,5436}" in DOC


def test_rent_example_frame_in_doc() -> None:
    text = encode_message(Command.FB, RentSlotRequest(0, 1733338800000, 3))
    crc = _crc16_modbus_bitwise(b"FB,0,1733338800000,3,GZXJ")
    assert text == f"{{0@FB,0,1733338800000,3,{crc:04x}}}"
    assert text in DOC


def test_report_example_frame_in_doc() -> None:
    report = SlotReport(
        0,
        "GZ0001",
        "2.1",
        2,
        0,
        0,
        0,
        (
            SlotRecord(1, True, "PB123456", 87, False, True, True),
            SlotRecord(2, False, None, 0, False, False, True),
        ),
    )
    text = encode_message(Command.AC, report)
    assert text in DOC
    assert decode_text(text).body == report


@given(wire_frames())
def test_crc_matches_bitwise_reference(text: str) -> None:
    command_to_last_comma = text[text.index("@") + 1 : -5]
    expected = _crc16_modbus_bitwise((command_to_last_comma + "GZXJ").encode("ascii"))
    assert int(text[-5:-1], 16) == expected


def test_upper_case_crc_accepted() -> None:
    assert parse_frame("{0@CQ,0,0,5436}") == parse_frame("{0@CQ,0,0,5436}".upper())


def test_checksum_error_names_values() -> None:
    with pytest.raises(ChecksumError) as caught:
        parse_frame("{0@CQ,0,0,5437}")
    assert caught.value.expected == 0x5436
    assert caught.value.actual == 0x5437
    assert "expected 5436" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0@CQ,0,0,5436}", "starts with"),
        ("{0@CQ,0,0,5436", "starts with"),
        ("{0CQ,0,0,5436}", "address"),
        ("{0@cq,0,0,5436}", "command word"),
        ("{0@CQ,0,0,54}", "4 hex digits"),
        ("{0@CQ,0,{0,5436}", "brace"),
        ("{0@CQ,0,0\x00,5436}", "printable"),
        ("{0@CQ}", "command word and a CRC"),
    ],
)
def test_frame_errors_name_problem(text: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        parse_frame(text)


def test_frame_too_long_rejected() -> None:
    with pytest.raises(FrameError, match=f"exceeds {MAX_FRAME}"):
        parse_frame("{0@CQ," + "1," * MAX_FRAME + "0000}")


def test_unknown_command_named() -> None:
    text = encode_frame("0", "ZZ", ["1"])
    with pytest.raises(UnknownCommandError, match="'ZZ'"):
        decode_text(text)


def test_wrong_field_count_named() -> None:
    text = encode_frame("0", "FB", ["1"])
    with pytest.raises(PayloadError, match="FB with 1 fields matches no layout"):
        decode_text(text)


def test_checksum_helper_matches_rule() -> None:
    assert checksum("CQ", ["0", "0"]) == _crc16_modbus_bitwise(b"CQ,0,0,GZXJ")
    assert checksum("XX", []) == _crc16_modbus_bitwise(b"XX,GZXJ")


# Deframer --------------------------------------------------------------------------------

frame_streams = st.lists(wire_frames(), min_size=1, max_size=5)


@given(frame_streams, st.data())
def test_any_split_gives_same_frames(stream: list[str], data: st.DataObject) -> None:
    joined = "\r\n".join(stream).encode("ascii")
    cuts = sorted(data.draw(st.sets(st.integers(0, len(joined)), max_size=8)))
    chunks = [joined[a:b] for a, b in zip([0, *cuts], [*cuts, len(joined)], strict=True)]
    assert _deframe(chunks) == stream


@settings(max_examples=20)
@given(frame_streams)
def test_byte_at_a_time_gives_same_frames(stream: list[str]) -> None:
    joined = "".join(stream).encode("ascii")
    assert _deframe([joined[i : i + 1] for i in range(len(joined))]) == stream


@given(st.binary(max_size=400), wire_frames())
def test_garbage_never_hides_next_frame(garbage: bytes, frame: str) -> None:
    deframer = Deframer()
    deframer.feed(garbage)
    found = deframer.feed(frame.encode("ascii"))
    assert found[-1].encode() == frame
    assert deframer.pending == 0


@given(wire_frames(), st.data())
def test_bit_flip_then_valid_frame(frame: str, data: st.DataObject) -> None:
    damaged = bytearray(frame.encode("ascii"))
    position = data.draw(st.integers(0, len(damaged) - 1))
    damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    # Upper- and lower-case CRC digits are both valid, so such a flip changes nothing.
    in_crc = len(frame) - 5 <= position < len(frame) - 1
    assume(not (in_crc and bytes(damaged).lower() == frame.encode("ascii").lower()))
    follower = encode_message(Command.CQ, QueryRequest(7, 0))
    found = _deframe([bytes(damaged) + follower.encode("ascii")])
    assert found[-1] == follower
    assert frame not in found


@given(wire_frames(), st.data())
def test_truncated_frame_then_valid_frame(frame: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(frame) - 1))
    follower = encode_message(Command.CQ, QueryRequest(8, 0))
    assert _deframe([(frame[:cut] + follower).encode("ascii")]) == [follower]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(st.binary(max_size=3000))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    deframer = Deframer()
    for frame in deframer.feed(data):
        with contextlib.suppress(GzxjError):
            decode_text(frame.encode())
    assert deframer.pending < MAX_FRAME


@settings(max_examples=60)
@given(st.text(max_size=300))
def test_random_text_parse_raises_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(GzxjError):
        decode_text(text)


def test_unterminated_frame_dropped_at_limit() -> None:
    deframer = Deframer()
    deframer.feed(b"{" + b"1" * (MAX_FRAME + 10))
    assert deframer.pending < MAX_FRAME
    assert deframer.stats.bad_frames == 1
    follower = encode_message(Command.CQ, QueryRequest(1, 0))
    assert [f.encode() for f in deframer.feed(follower.encode("ascii"))] == [follower]


def test_stats_count_crc_errors_and_noise() -> None:
    good = encode_message(Command.CQ, QueryRequest(1, 0))
    deframer = Deframer()
    found = deframer.feed(b"\x00\r\n{0@CQ,0,0,5437}" + good.encode("ascii") + b"\r\n")
    assert [f.encode() for f in found] == [good]
    assert deframer.stats.crc_errors == 1
    assert deframer.stats.frames == 1
    assert deframer.stats.bytes_dropped == 3 + 15 + 2


def test_reset_discards_partial_frame() -> None:
    frame = encode_message(Command.CQ, QueryRequest(1, 0))
    deframer = Deframer()
    deframer.feed(frame[:5].encode("ascii"))
    deframer.reset()
    assert deframer.pending == 0
    assert [f.encode() for f in deframer.feed(frame.encode("ascii"))] == [frame]


# Mapping ---------------------------------------------------------------------------------


def test_every_rent_result_has_mapping() -> None:
    assert set(RENT_RESULTS) == set(RentResult)
    assert rent_result(RentResult.OK).outcome is None
    assert rent_result(RentResult.NO_BANK).reject_reason is EjectRejectReason.NO_RENTABLE_BANK
    assert rent_result(RentResult.TIMEOUT).fail_reason is EjectFailReason.TIMEOUT
    assert rent_result(RentResult.LOCK_ABNORMAL).fault is FaultKind.LOCK_FAULT
    assert rent_result(7).outcome is EjectOutcome.FAILED


@pytest.mark.parametrize(
    ("changes", "pending", "expected"),
    [
        ({"bank_id": None, "in_contact": False}, False, SlotState.EMPTY),
        ({"bank_id": None, "in_contact": True}, False, SlotState.FAULTED),
        ({}, False, SlotState.READY),
        ({"charging": True}, False, SlotState.CHARGING),
        ({"locked": False}, True, SlotState.AWAITING_TAKE),
        ({"locked": False}, False, SlotState.FAULTED),
    ],
)
def test_slot_state_cases(changes: dict[str, Any], pending: bool, expected: SlotState) -> None:
    record = dataclasses.replace(SlotRecord(1, True, "PB1", 90, False, True, True), **changes)
    assert slot_state(record, unlock_pending=pending) is expected


def test_slot_faults_cases() -> None:
    unreadable = SlotRecord(1, False, None, 0, False, True, True)
    open_lock = SlotRecord(2, True, "PB2", 50, False, True, False)
    assert slot_faults(unreadable) == {FaultKind.ID_READ_FAILED}
    assert slot_faults(open_lock) == {FaultKind.TAMPER}
    assert slot_faults(open_lock, unlock_pending=True) == frozenset()
