"""S1TT codec: command table, layouts, frames, the gap-delimited deframer and the mapping."""

from __future__ import annotations

import contextlib
import enum
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol.cabinet import EjectOutcome, EjectRejectReason, FaultKind, SlotState
from protocol.s1tt import (
    COMMANDS,
    BankState,
    BankStatus,
    BankTimeoutError,
    BoardError,
    ChecksumError,
    Command,
    Deframer,
    Empty,
    Frame,
    FrameError,
    InternalBoardError,
    Message,
    PayloadError,
    S1ttError,
    SlotBits,
    SlotRef,
    SlotsReply,
    Status,
    UnknownCommandError,
    decode_reply,
    decode_request,
    encode_error,
    encode_frame,
    encode_reply,
    encode_request,
    parse_frame,
)
from protocol.s1tt import fields as codecs
from protocol.s1tt.codec import fits_table
from protocol.s1tt.constants import CRC_SIZE, MAX_FRAME, MAX_PAYLOAD, MIN_FRAME, START
from protocol.s1tt.deframer import BUFFER_LIMIT
from protocol.s1tt.frame import crc_matches
from protocol.s1tt.mapping import (
    BANK_STATES,
    UNLOCK_RESULTS,
    board_slot,
    cabinet_slot,
    slot_faults,
    slot_state,
    unlock_result,
)

DOC = (Path(__file__).parents[2] / "docs" / "protocol-s1tt.md").read_text(encoding="utf-8")

_TEXT = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789.-", max_size=10)


def _value(codec: codecs.FieldCodec) -> st.SearchStrategy[Any]:
    if isinstance(codec, codecs.UInt):
        if isinstance(codec.convert, enum.EnumMeta):
            return st.sampled_from(list(codec.convert))
        return st.integers(0, codec.maximum)
    if isinstance(codec, codecs.Flag):
        return st.booleans()
    if isinstance(codec, codecs.Text):
        return _TEXT.map(lambda text: text[: codec.size])
    if isinstance(codec, codecs.RestText):
        return st.text(alphabet="0123456789.v-", max_size=20)
    if isinstance(codec, codecs.Chunk):
        return st.binary(max_size=codec.max_size)
    if isinstance(codec, codecs.Optional):
        return st.none() | _value(codec.inner)
    if isinstance(codec, codecs.Records):
        return st.lists(messages(codec.item), max_size=codec.max_count).map(tuple)
    raise TypeError(f"no strategy for {codec!r}")


def messages(layout: type[Message]) -> st.SearchStrategy[Message]:
    """Draw any valid instance of a layout."""
    return st.builds(layout, **{name: _value(codec) for name, codec in layout.FIELDS})


addresses = st.integers(0, 0xFF)
commands = st.sampled_from(list(Command))


@st.composite
def wire_frames(draw: st.DrawFn) -> bytes:
    """Draw the bytes of any valid request, reply or error reply."""
    command = draw(commands)
    spec = COMMANDS[command]
    kind = draw(st.sampled_from(["request", "reply", "error"]))
    address = draw(addresses)
    if kind == "request":
        return encode_request(address, command, draw(messages(spec.request)))
    if kind == "reply":
        return encode_reply(address, command, draw(messages(spec.reply)))
    return encode_error(address, command, draw(st.integers(1, 4)))


def _crc16_modbus_bitwise(data: bytes) -> int:
    """CRC-16/MODBUS computed bit by bit, independent of protocol.crc's table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _deframe(chunks: list[bytes]) -> list[bytes]:
    deframer = Deframer()
    frames: list[Frame] = []
    for chunk in chunks:
        frames += deframer.feed(chunk)
    frames += deframer.gap()
    return [frame.encode() for frame in frames]


# Command table -------------------------------------------------------------------------


def test_command_ids_unique() -> None:
    ids = [int(command) for command in Command]
    assert len(ids) == len(set(ids))
    assert set(COMMANDS) == set(Command)


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
def test_every_command_has_doc_section(command: Command) -> None:
    heading = rf"^### {command.name} \(`0x{command:02X}`\)"
    assert re.search(heading, DOC, re.MULTILINE), f"no section for {command.name}"
    assert f"| `0x{command:02X}` | {command.name} |" in DOC


@pytest.mark.parametrize("status", list(Status))
def test_every_status_in_doc(status: Status) -> None:
    assert f"| {status.value} | {status.name} |" in DOC


@pytest.mark.parametrize("state", list(BankState))
def test_every_bank_state_in_doc(state: BankState) -> None:
    assert f"| {state.value} | {state.name} |" in DOC


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
@settings(max_examples=15)
@given(data=st.data())
def test_every_command_round_trips(command: Command, data: st.DataObject) -> None:
    spec = COMMANDS[command]
    request = data.draw(messages(spec.request))
    reply = data.draw(messages(spec.reply))
    address = data.draw(addresses)

    decoded_request = decode_request(parse_frame(encode_request(address, command, request)))
    assert decoded_request.body == request
    assert decoded_request.spec.command is command
    assert decoded_request.address == address

    decoded_reply = decode_reply(parse_frame(encode_reply(address, command, reply)))
    assert decoded_reply.body == reply
    assert decoded_reply.spec.command is command


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
def test_every_layout_fits_one_frame(command: Command) -> None:
    spec = COMMANDS[command]
    for layout in (spec.request, spec.reply):
        longest = 2 + sum(_longest(codec) for _, codec in layout.FIELDS)
        assert longest <= MAX_PAYLOAD, f"{layout.__name__} needs {longest} bytes"


def _longest(codec: codecs.FieldCodec) -> int:
    if isinstance(codec, codecs.UInt | codecs.Text):
        return codec.size
    if isinstance(codec, codecs.Flag):
        return 1
    if isinstance(codec, codecs.Chunk):
        return 1 + codec.max_size
    if isinstance(codec, codecs.Optional):
        return _longest(codec.inner)
    if isinstance(codec, codecs.Records):
        record_size: int = codec.item.size()
        return codec.max_count * record_size
    return 20  # RestText: a firmware version string


def test_encode_rejects_wrong_layout() -> None:
    with pytest.raises(PayloadError, match="UNLOCK request takes SlotRef"):
        encode_request(0, Command.UNLOCK, Empty())


# Frames and CRC --------------------------------------------------------------------------


def test_unlock_example_frame_by_hand() -> None:
    # UNLOCK (0x06) of slot 2 on board 0. CRC-16/MODBUS of 00 06 02 is 0xA1F3, sent low byte
    # first. The same bytes are shown in docs/protocol-s1tt.md.
    frame = encode_request(0, Command.UNLOCK, SlotRef(2))
    assert frame == bytes([0xEA, 0x00, 0x06, 0x02, 0xF3, 0xA1])
    assert _crc16_modbus_bitwise(bytes([0x00, 0x06, 0x02])) == 0xA1F3
    assert frame.hex(" ").upper() in DOC


def test_status_reply_example_in_doc() -> None:
    body = BankStatus(
        "TT00000042", 1_700_000_000, 13925, 11625, 10625, 12, BankState.CHARGING, None
    )
    frame = encode_reply(1, Command.STATUS, body)
    assert _crc16_modbus_bitwise(frame[1:-2]) == int.from_bytes(frame[-2:], "little")
    assert frame.hex(" ").upper() in DOC


@given(wire_frames())
def test_crc_matches_bitwise_reference(frame: bytes) -> None:
    assert int.from_bytes(frame[-2:], "little") == _crc16_modbus_bitwise(frame[1:-2])


def test_parse_frame_names_checksum() -> None:
    frame = bytearray(encode_request(0, Command.UNLOCK, SlotRef(2)))
    frame[-1] ^= 0x01
    with pytest.raises(ChecksumError) as caught:
        parse_frame(bytes(frame))
    assert caught.value.expected == 0xA1F3
    assert caught.value.actual == 0xA0F3
    assert "expected 0xA1F3" in str(caught.value)


def test_parse_frame_names_length_and_start() -> None:
    with pytest.raises(FrameError, match="shorter than the minimum 5"):
        parse_frame(bytes([START, 0, 6]))
    with pytest.raises(FrameError, match=f"longer than the maximum {MAX_FRAME}"):
        parse_frame(bytes([START]) + bytes(MAX_FRAME))
    with pytest.raises(FrameError, match="expected start byte 0xEA"):
        parse_frame(bytes([0xA5, 0, 6, 2, 0xF3, 0xA1]))


def test_unknown_command_is_named() -> None:
    frame = parse_frame(encode_frame(0, b"\x77\x02"))
    with pytest.raises(UnknownCommandError, match="0x77"):
        decode_request(frame)


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(PayloadError, match="unexpected bytes"):
        SlotRef.decode(b"\x01\x02")


def test_error_reply_raises_board_error() -> None:
    frame = parse_frame(encode_error(2, Command.STATUS, Status.TIMEOUT))
    with pytest.raises(BankTimeoutError) as caught:
        decode_reply(frame)
    assert caught.value.command is Command.STATUS
    assert caught.value.address == 2


def test_undefined_status_is_internal_error() -> None:
    with pytest.raises(InternalBoardError) as caught:
        decode_reply(parse_frame(encode_error(0, Command.UNLOCK, 0x80)))
    assert caught.value.raw_status == 0x80


def test_status_reply_optional_capacity() -> None:
    old = BankStatus("A1", 1, 2, 3, 4, 5, BankState.IDLE, None)
    new = BankStatus("A1", 1, 2, 3, 4, 5, BankState.IDLE, 9800)
    assert len(old.encode()) == 23
    assert len(new.encode()) == 25
    assert BankStatus.decode(new.encode()).average_capacity_mah == 9800


def test_slots_reply_bits_per_slot() -> None:
    slots = SlotsReply(filled_mask=0b000101, lock_mask=0b000100).slots
    assert slots[0] == SlotBits(0, filled=True, locked=True)
    assert slots[1] == SlotBits(1, filled=False, locked=True)
    assert slots[2] == SlotBits(2, filled=True, locked=False)
    assert len(slots) == 6


# Deframer --------------------------------------------------------------------------------

frame_streams = st.lists(wire_frames(), min_size=1, max_size=6)


def ends_early(wire: bytes) -> bool:
    """Return whether a proper prefix of `wire` also passes as a frame (a chance CRC match).

    Without a length field the deframer cannot tell such a frame from two frames, as its
    module docstring states. A split cannot preserve such streams.
    """
    for end in range(MIN_FRAME, len(wire)):
        candidate = Frame(wire[1], bytes(wire[2 : end - CRC_SIZE]))
        if crc_matches(wire, 0, end) and fits_table(candidate):
            return True
    return False


@given(frame_streams, st.data())
def test_any_split_gives_same_frames(stream: list[bytes], data: st.DataObject) -> None:
    assume(not any(ends_early(wire) for wire in stream[:-1]))
    joined = b"".join(stream)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(joined)), max_size=8)))
    chunks = [joined[a:b] for a, b in zip([0, *cuts], [*cuts, len(joined)], strict=True)]
    assert _deframe(chunks) == stream


@settings(max_examples=25)
@given(frame_streams)
def test_byte_at_a_time_gives_same_frames(stream: list[bytes]) -> None:
    joined = b"".join(stream)
    assert _deframe([joined[i : i + 1] for i in range(len(joined))]) == stream


@given(frame_streams)
def test_gap_after_each_frame(stream: list[bytes]) -> None:
    deframer = Deframer()
    found = []
    for frame in stream:
        assert deframer.feed(frame) == [] or len(frame) > BUFFER_LIMIT
        found += [f.encode() for f in deframer.gap()]
    assert found == stream
    assert deframer.pending == 0


def test_long_burst_without_gap_stays_bounded() -> None:
    frame = encode_request(1, Command.SLOTS, Empty())
    deframer = Deframer()
    found = []
    for _ in range(200):
        found += deframer.feed(frame)
        assert deframer.pending <= BUFFER_LIMIT
    found += deframer.gap()
    assert [f.encode() for f in found] == [frame] * 200


@given(st.binary(max_size=300), wire_frames())
def test_garbage_then_gap_never_hides_frame(garbage: bytes, frame: bytes) -> None:
    deframer = Deframer()
    deframer.feed(garbage)
    deframer.gap()
    deframer.feed(frame)
    assert [f.encode() for f in deframer.gap()] == [frame]


@given(st.binary(max_size=300), wire_frames())
def test_garbage_without_gap_never_hides_frame(garbage: bytes, frame: bytes) -> None:
    found = _deframe([garbage, frame])
    assert found[-1] == frame


@given(wire_frames(), st.data())
def test_bit_flip_then_valid_frame(frame: bytes, data: st.DataObject) -> None:
    damaged = bytearray(frame)
    position = data.draw(st.integers(0, len(frame) - 1))
    damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    follower = encode_request(7, Command.STATUS, SlotRef(3))
    found = _deframe([bytes(damaged) + follower])
    assert found[-1] == follower
    assert frame not in found


@given(wire_frames(), st.data())
def test_truncated_frame_then_valid_frame(frame: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(frame) - 1))
    follower = encode_request(4, Command.SLOTS, Empty())
    # When the lost tail equals the follower's first bytes (a CRC ending in 0xEA), the
    # bytes really are the whole first frame, and no receiver can tell otherwise.
    assume(not follower.startswith(frame[cut:]))
    assert _deframe([frame[:cut] + follower])[-1] == follower

    deframer = Deframer()
    deframer.feed(frame[:cut])
    deframer.gap()
    deframer.feed(follower)
    assert [f.encode() for f in deframer.gap()] == [follower]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(st.binary(max_size=1000))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    deframer = Deframer()
    frames = deframer.feed(data)
    assert deframer.pending <= BUFFER_LIMIT
    for frame in frames + deframer.gap():
        for decode in (decode_request, decode_reply):
            with contextlib.suppress(S1ttError):
                decode(frame)
    assert deframer.pending == 0


def test_stats_count_frames_and_drops() -> None:
    good = encode_request(1, Command.SLOTS, Empty())
    deframer = Deframer()
    deframer.feed(b"\x00\x01" + good)
    assert [f.encode() for f in deframer.gap()] == [good]
    assert deframer.stats.frames == 1
    assert deframer.stats.bytes_dropped == 2
    assert deframer.stats.bytes_in == 2 + len(good)
    assert deframer.stats.gaps == 1


def test_reset_discards_held_bytes() -> None:
    frame = encode_request(1, Command.SLOTS, Empty())
    deframer = Deframer()
    deframer.feed(frame[:3])
    deframer.reset()
    assert deframer.pending == 0
    deframer.feed(frame)
    assert [f.encode() for f in deframer.gap()] == [frame]


def test_unknown_command_passes_at_gap() -> None:
    # The last frame before a gap needs only a valid CRC, so the codec can name the command.
    unknown = encode_frame(3, b"\x77\x01")
    deframer = Deframer()
    deframer.feed(unknown)
    assert [f.encode() for f in deframer.gap()] == [unknown]


# Mapping ---------------------------------------------------------------------------------


def test_every_status_has_unlock_mapping() -> None:
    assert set(UNLOCK_RESULTS) == set(Status)
    assert unlock_result(Status.OK).outcome is None
    assert unlock_result(Status.TIMEOUT).outcome is EjectOutcome.FAILED
    assert unlock_result(Status.INVALID_ARGUMENTS).reject_reason is EjectRejectReason.UNKNOWN_SLOT
    assert unlock_result(0x80) == UNLOCK_RESULTS[Status.INTERNAL_ERROR]


def test_every_bank_state_has_slot_state() -> None:
    assert set(BANK_STATES) == set(BankState)
    assert BANK_STATES[BankState.CHARGING] is SlotState.CHARGING
    assert BANK_STATES[BankState.CUTOFF] is SlotState.FAULTED


@pytest.mark.parametrize(
    ("bits", "bank", "pending", "expected"),
    [
        (SlotBits(0, filled=False, locked=True), None, False, SlotState.EMPTY),
        (SlotBits(0, filled=True, locked=True), None, False, SlotState.UNKNOWN),
        (SlotBits(0, filled=True, locked=True), BankState.IDLE, False, SlotState.READY),
        (SlotBits(0, filled=True, locked=False), BankState.IDLE, True, SlotState.AWAITING_TAKE),
        (SlotBits(0, filled=True, locked=False), BankState.IDLE, False, SlotState.FAULTED),
    ],
)
def test_slot_state_cases(
    bits: SlotBits, bank: BankState | None, pending: bool, expected: SlotState
) -> None:
    assert slot_state(bits, bank, unlock_pending=pending) is expected


def test_open_lock_without_unlock_is_tamper() -> None:
    bits = SlotBits(1, filled=True, locked=False)
    assert slot_faults(bits) == {FaultKind.TAMPER}
    assert slot_faults(bits, unlock_pending=True) == frozenset()


@pytest.mark.parametrize(
    ("cabinet", "board", "slot"), [(1, 0, 0), (6, 0, 5), (7, 1, 0), (30, 4, 5)]
)
def test_cabinet_slot_numbering(cabinet: int, board: int, slot: int) -> None:
    assert board_slot(cabinet) == (board, slot)
    assert cabinet_slot(board, slot) == cabinet


def test_cabinet_slot_rejects_outside() -> None:
    with pytest.raises(ValueError, match="must be 1 or more"):
        board_slot(0)
    with pytest.raises(ValueError, match="outside the cabinet layout"):
        cabinet_slot(0, 6)


def test_board_error_is_protocol_error() -> None:
    assert issubclass(BoardError, S1ttError)
    assert issubclass(ChecksumError, FrameError)
