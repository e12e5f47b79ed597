"""The technicians' entry point: one captured frame of any protocol to JSON and back."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import gzxj, s1tt, slotbus
from protocol.framedecode import decode_frame, encode_frame
from tests.protocol.strategies import wire_frames as native_frames
from tests.protocol.test_gzxj import wire_frames as gzxj_frames
from tests.protocol.test_s1tt import wire_frames as s1tt_frames

NATIVE_UNLOCK = "A5 01 07 10 06 03 1E EF BE AD DE 60 F7"


@settings(max_examples=60)
@given(native_frames())
def test_native_round_trips(frame: bytes) -> None:
    decoded = decode_frame("native", frame.hex())
    json.dumps(decoded)
    assert decoded["crc"]["valid"] is True
    assert encode_frame("native", decoded) == frame.hex(" ").upper()


@settings(max_examples=60)
@given(s1tt_frames())
def test_s1tt_round_trips(frame: bytes) -> None:
    decoded = decode_frame("s1tt", frame.hex(" "))
    json.dumps(decoded)
    assert encode_frame("s1tt", decoded) == frame.hex(" ").upper()
    for alternative in decoded.get("alternatives", []):
        assert encode_frame("s1tt", alternative) == frame.hex(" ").upper()


@settings(max_examples=60)
@given(gzxj_frames())
def test_gzxj_round_trips(text: str) -> None:
    decoded = decode_frame("gzxj", text + "\r\n")
    json.dumps(decoded)
    assert encode_frame("gzxj", decoded) == text


def test_native_example_fields() -> None:
    decoded = decode_frame("native", NATIVE_UNLOCK)
    assert decoded["command"] == "UNLOCK"
    assert decoded["direction"] == "request"
    assert decoded["fields"] == {"slot": 3, "window_s": 30, "token": 0xDEADBEEF}
    assert decoded["crc"] == {"value": "F760", "valid": True}


def test_native_error_response_shows_status() -> None:
    frame = slotbus.encode_error(1, 3, slotbus.Command.UNLOCK, slotbus.Status.BUSY)
    decoded = decode_frame("native", frame.hex())
    assert decoded["status"] == "BUSY"
    assert decoded["command"] == "UNLOCK"
    assert encode_frame("native", decoded) == frame.hex(" ").upper()


def test_s1tt_slots_reply_lists_slots() -> None:
    frame = s1tt.encode_reply(2, s1tt.Command.SLOTS, s1tt.SlotsReply(0b11, 0b10))
    decoded = decode_frame("s1tt", frame.hex(), direction="reply")
    assert decoded["fields"]["slots"][1] == {"slot": 1, "filled": True, "locked": False}
    assert "alternatives" not in decoded


def test_s1tt_direction_settles_ambiguity() -> None:
    # 06 02 is UNLOCK of slot 2 as a request, and UNLOCK with status 2 as a reply.
    data = "EA 00 06 02 F3 A1"
    both = decode_frame("s1tt", data)
    assert both["direction"] == "request"
    assert both["alternatives"][0]["status"] == "INVALID_COMMAND"
    assert "alternatives" not in decode_frame("s1tt", data, direction="request")
    assert decode_frame("s1tt", data, direction="response")["direction"] == "reply"


def test_gzxj_example_fields() -> None:
    decoded = decode_frame("gzxj", "{0@CQ,0,0,5436}")
    assert decoded["command"] == "CQ"
    assert decoded["sender"] == "host"
    assert decoded["fields"] == {"message_id": 0, "slot": 0}
    assert decoded["crc"] == {"value": "5436", "valid": True}


def test_gzxj_capture_noise_ignored() -> None:
    assert decode_frame("gzxj", "\x00{0@CQ,0,0,5436}\r\n")["command"] == "CQ"


def test_gzxj_reply_sender_is_station() -> None:
    text = gzxj.encode_message(
        gzxj.Command.FB, gzxj.RentReply(1, 2, gzxj.RentResult.LOCK_ABNORMAL, 3, "PB1")
    )
    decoded = decode_frame("gzxj", text)
    assert decoded["direction"] == "reply"
    assert decoded["sender"] == "station"
    assert decoded["fields"]["result"] == "LOCK_ABNORMAL"


@pytest.mark.parametrize(
    ("protocol", "data", "error", "message"),
    [
        ("native", NATIVE_UNLOCK[:-3] + " F8", slotbus.FrameError, "expected 0xF760"),
        ("native", NATIVE_UNLOCK[:-3], slotbus.FrameError, "frame of 13 bytes, but 12"),
        ("native", "A5 01 07 77 00 97 E9", slotbus.UnknownCommandError, "0x77"),
        ("native", "not hex", slotbus.FrameError, "not hex"),
        ("s1tt", "EA 00 06 02 F3 A0", s1tt.ChecksumError, "expected 0xA1F3"),
        ("s1tt", "EA 00", s1tt.FrameError, "shorter than the minimum"),
        ("s1tt", s1tt.encode_frame(0, b"\x77\x00\x01").hex(), s1tt.UnknownCommandError, "0x77"),
        ("gzxj", "{0@CQ,0,0,5437}", gzxj.ChecksumError, "expected 5436"),
        ("gzxj", "{0@CQ,0,0,5436", gzxj.FrameError, "ends with"),
        ("gzxj", gzxj.encode_frame("0", "ZZ", ["1"]), gzxj.UnknownCommandError, "'ZZ'"),
    ],
)
def test_errors_name_the_problem(
    protocol: str, data: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        decode_frame(protocol, data)


def test_native_unknown_command_frame_is_valid() -> None:
    # The parametrized case above needs a valid CRC; check the fixture bytes here.
    raw = bytes.fromhex("A5 01 07 77 00")
    assert slotbus.encode_frame(1, 7, 0x77, b"") == raw + bytes.fromhex("97 E9")


def test_unknown_protocol_rejected() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'modbus'"):
        decode_frame("modbus", "00")
    with pytest.raises(ValueError, match="unknown protocol"):
        encode_frame("modbus", {})


def test_encode_names_missing_field() -> None:
    with pytest.raises(ValueError, match="missing 'slot'"):
        encode_frame("s1tt", {"command": "UNLOCK", "address": 0, "fields": {}})
    with pytest.raises(ValueError, match="missing 'address'"):
        encode_frame("native", {"command": "UNLOCK", "sequence": 1})


def test_encode_accepts_status_names() -> None:
    spec = {"command": "STATUS", "direction": "reply", "address": 1, "status": "TIMEOUT"}
    data = encode_frame("s1tt", spec)
    assert data == s1tt.encode_error(1, s1tt.Command.STATUS, s1tt.Status.TIMEOUT).hex(" ").upper()


@settings(max_examples=80)
@given(st.binary(max_size=80))
def test_random_hex_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(slotbus.ProtocolError):
        json.dumps(decode_frame("native", data.hex()))
    with contextlib.suppress(s1tt.S1ttError):
        json.dumps(decode_frame("s1tt", data.hex()))


@settings(max_examples=80)
@given(st.text(max_size=120))
def test_random_text_raises_only_protocol_errors(text: str) -> None:
    with contextlib.suppress(gzxj.GzxjError):
        json.dumps(decode_frame("gzxj", text))
