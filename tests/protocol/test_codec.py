from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.slotbus import (
    COMMANDS,
    BankBatch,
    BankData,
    BankFault,
    BoardBusyError,
    BoardError,
    BoardUnknownCommandError,
    Command,
    Deframer,
    Empty,
    EventBatch,
    Frame,
    FrameError,
    InternalBoardError,
    InvalidArgumentError,
    Message,
    NoBankError,
    PayloadError,
    SlotFaultError,
    SlotRange,
    SlotRef,
    SlotsStatus,
    Status,
    UnknownCommandError,
    UnlockRequest,
    bank_id_from_hex,
    bank_id_hex,
    decode_request,
    decode_response,
    encode_error,
    encode_frame,
    encode_request,
    encode_response,
)
from protocol.slotbus.constants import (
    MAX_BANKS_PER_READ,
    MAX_EVENTS_PER_READ,
    MAX_PAYLOAD,
    MAX_SLOTS_PER_BOARD,
    RESPONSE_FLAG,
)
from tests.protocol.strategies import addresses, messages, sequences


def _single_frame(data: bytes) -> Frame:
    frames = Deframer().feed(data)
    assert len(frames) == 1
    return frames[0]


@pytest.mark.parametrize("command", list(COMMANDS), ids=lambda c: c.name)
@given(data=st.data(), address=addresses, sequence=sequences)
def test_request_round_trip(
    command: Command, data: st.DataObject, address: int, sequence: int
) -> None:
    body = data.draw(messages(COMMANDS[command].request))
    request = decode_request(_single_frame(encode_request(address, sequence, command, body)))
    assert request.spec.command is command
    assert request.address == address
    assert request.sequence == sequence
    assert request.body == body


@pytest.mark.parametrize("command", list(COMMANDS), ids=lambda c: c.name)
@given(data=st.data(), address=addresses, sequence=sequences)
def test_response_round_trip(
    command: Command, data: st.DataObject, address: int, sequence: int
) -> None:
    body = data.draw(messages(COMMANDS[command].response))
    response = decode_response(_single_frame(encode_response(address, sequence, command, body)))
    assert response.spec.command is command
    assert response.sequence == sequence
    assert response.body == body


ERROR_CLASSES: dict[Status, type[BoardError]] = {
    Status.BUSY: BoardBusyError,
    Status.UNKNOWN_COMMAND: BoardUnknownCommandError,
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.SLOT_FAULT: SlotFaultError,
    Status.INTERNAL_ERROR: InternalBoardError,
    Status.NO_BANK: NoBankError,
}


@pytest.mark.parametrize(("status", "error_class"), list(ERROR_CLASSES.items()))
def test_error_status_maps_to_class(status: Status, error_class: type[BoardError]) -> None:
    frame = _single_frame(encode_error(4, 9, Command.GET_BANK, status))
    with pytest.raises(error_class) as caught:
        decode_response(frame)
    assert caught.value.address == 4
    assert caught.value.command is Command.GET_BANK
    assert status.name in str(caught.value)


def test_every_status_has_error_class() -> None:
    assert set(ERROR_CLASSES) == set(Status) - {Status.OK}


def test_undefined_status_is_internal_error() -> None:
    frame = _single_frame(encode_frame(1, 0, Command.IDENTIFY | RESPONSE_FLAG, b"\x7f"))
    with pytest.raises(InternalBoardError):
        decode_response(frame)


def test_error_for_unknown_command_id_decodes() -> None:
    frame = _single_frame(encode_error(2, 1, 0x6E, Status.UNKNOWN_COMMAND))
    with pytest.raises(BoardUnknownCommandError) as caught:
        decode_response(frame)
    assert caught.value.command == 0x6E


def test_error_response_needs_error_status() -> None:
    with pytest.raises(PayloadError):
        encode_error(1, 0, Command.IDENTIFY, Status.OK)


def test_unknown_request_command_raises() -> None:
    with pytest.raises(UnknownCommandError) as caught:
        decode_request(_single_frame(encode_frame(1, 0, 0x7E, b"")))
    assert caught.value.command_id == 0x7E


def test_unknown_response_command_raises() -> None:
    with pytest.raises(UnknownCommandError):
        decode_response(_single_frame(encode_frame(1, 0, 0x7E | RESPONSE_FLAG, b"\x00")))


def test_request_with_wrong_length_raises() -> None:
    short = _single_frame(encode_frame(1, 0, Command.UNLOCK, b"\x01\x1e"))
    with pytest.raises(PayloadError, match="too short"):
        decode_request(short)
    long = _single_frame(encode_frame(1, 0, Command.GET_BANK, b"\x01\x02"))
    with pytest.raises(PayloadError, match="unexpected bytes"):
        decode_request(long)


def test_response_without_status_raises() -> None:
    with pytest.raises(PayloadError, match="status"):
        decode_response(_single_frame(encode_frame(1, 0, Command.IDENTIFY | RESPONSE_FLAG, b"")))


def test_request_and_response_directions_checked() -> None:
    request = _single_frame(encode_request(1, 0, Command.IDENTIFY, Empty()))
    with pytest.raises(PayloadError):
        decode_response(request)
    response = _single_frame(encode_error(1, 0, Command.IDENTIFY, Status.BUSY))
    with pytest.raises(PayloadError):
        decode_request(response)


def test_invalid_enum_value_raises_payload_error() -> None:
    # GET_SLOTS with one record whose lock state is 9, which LockState does not define.
    record = bytes([1, 0, 9, 0, 50]) + bytes(8) + b"\x00\x00"
    frame = _single_frame(
        encode_frame(1, 0, Command.GET_SLOTS | RESPONSE_FLAG, b"\x00\x01" + record)
    )
    with pytest.raises(PayloadError, match="lock"):
        decode_response(frame)


def test_body_type_must_match_command() -> None:
    with pytest.raises(PayloadError, match="UnlockRequest"):
        encode_request(1, 0, Command.UNLOCK, SlotRef(1))


def test_out_of_range_field_raises_payload_error() -> None:
    with pytest.raises(PayloadError):
        encode_request(1, 0, Command.UNLOCK, UnlockRequest(slot=300, window_s=30, token=1))


@pytest.mark.parametrize("address", [0, 248, 255, -1])
def test_encode_rejects_invalid_address(address: int) -> None:
    with pytest.raises(FrameError, match="address"):
        encode_frame(address, 0, Command.IDENTIFY, b"")


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        encode_frame(1, 0, Command.IDENTIFY, bytes(MAX_PAYLOAD + 1))


def test_every_response_fits_one_frame() -> None:
    for spec in COMMANDS.values():
        for layout in (spec.request, spec.response):
            size = layout.size()
            if layout.ITEMS is not None:
                size += 1 + _max_items(layout) * layout.ITEMS[1].size()
            assert 1 + size <= MAX_PAYLOAD, layout.__name__


def _max_items(layout: type[Message]) -> int:
    limits = {
        SlotsStatus: MAX_SLOTS_PER_BOARD,
        EventBatch: MAX_EVENTS_PER_READ,
        BankBatch: MAX_BANKS_PER_READ,
    }
    return limits[layout]


def _bank(slot: int) -> BankData:
    return BankData(slot, bytes(range(1, 9)), 87, 4012, -150, 274, 31, 98, 10000, BankFault(0))


def test_get_banks_layouts() -> None:
    assert SlotRange(first_slot=3, count=4).encode() == b"\x03\x04"
    batch = BankBatch((_bank(1), _bank(4)))
    # The records have the GET_BANK layout, after one count byte.
    assert batch.encode() == b"\x02" + _bank(1).encode() + _bank(4).encode()
    assert BankBatch(()).encode() == b"\x00"


def test_full_bank_batch_fits_one_frame() -> None:
    full = BankBatch(tuple(_bank(slot) for slot in range(1, MAX_BANKS_PER_READ + 1)))
    frame = _single_frame(encode_response(1, 0, Command.GET_BANKS, full))
    assert len(frame.payload) == 2 + MAX_BANKS_PER_READ * BankData.size()
    assert decode_response(frame).body == full
    one_more = BankBatch((*full.banks, _bank(MAX_BANKS_PER_READ + 1)))
    with pytest.raises(FrameError, match="exceeds"):
        encode_response(1, 0, Command.GET_BANKS, one_more)


def test_bank_batch_with_short_record_raises() -> None:
    payload = b"\x00\x02" + _bank(1).encode() + _bank(2).encode()[:-1]
    frame = _single_frame(encode_frame(1, 0, Command.GET_BANKS | RESPONSE_FLAG, payload))
    with pytest.raises(PayloadError, match="too short"):
        decode_response(frame)


def test_bank_id_hex_round_trip() -> None:
    assert bank_id_hex(bank_id_from_hex("0A0B0C0D")) == "000000000A0B0C0D"
    assert bank_id_hex(bytes(8)) is None
    with pytest.raises(ValueError, match="4 to 8"):
        bank_id_from_hex("0A0B")


def test_trailing_bytes_need_opt_in() -> None:
    frame = _single_frame(encode_frame(1, 0, Command.LOCK | RESPONSE_FLAG, b"\x00\x02\x00\xaa\xbb"))
    with pytest.raises(PayloadError, match="unexpected bytes"):
        decode_response(frame)
    assert decode_response(frame, allow_trailing=True).body.encode() == b"\x02\x00"


def test_boolean_field_rejects_other_values() -> None:
    frame = _single_frame(encode_frame(1, 0, Command.SET_CHARGING, b"\x01\x02"))
    with pytest.raises(PayloadError, match="enable"):
        decode_request(frame)
