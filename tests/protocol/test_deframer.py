from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.slotbus import (
    Command,
    Deframer,
    EventsRequest,
    Frame,
    ProtocolError,
    decode_request,
    decode_response,
    encode_request,
)
from protocol.slotbus.constants import MAX_FRAME, START
from tests.protocol.strategies import wire_frames

frame_streams = st.lists(wire_frames(), min_size=1, max_size=6)


def _feed_all(chunks: list[bytes]) -> list[Frame]:
    deframer = Deframer()
    frames: list[Frame] = []
    for chunk in chunks:
        frames += deframer.feed(chunk)
    return frames


@given(frame_streams, st.data())
def test_any_split_gives_same_frames(stream: list[bytes], data: st.DataObject) -> None:
    joined = b"".join(stream)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(joined)), max_size=8)))
    chunks = [joined[a:b] for a, b in zip([0, *cuts], [*cuts, len(joined)], strict=True)]
    assert [frame.encode() for frame in _feed_all(chunks)] == stream


@settings(max_examples=30)
@given(frame_streams)
def test_byte_at_a_time_gives_same_frames(stream: list[bytes]) -> None:
    joined = b"".join(stream)
    frames = _feed_all([joined[i : i + 1] for i in range(len(joined))])
    assert [frame.encode() for frame in frames] == stream


def test_every_single_split_position() -> None:
    stream = [
        encode_request(1, 1, Command.READ_EVENTS, EventsRequest(9)),
        encode_request(2, 2, Command.READ_EVENTS, EventsRequest(3)),
    ]
    joined = b"".join(stream)
    for cut in range(len(joined) + 1):
        assert [f.encode() for f in _feed_all([joined[:cut], joined[cut:]])] == stream


@given(st.binary(max_size=600), wire_frames())
def test_garbage_never_hides_next_frame(garbage: bytes, frame: bytes) -> None:
    deframer = Deframer()
    found = deframer.feed(garbage) + deframer.feed(frame)
    assert found[-1].encode() == frame
    assert deframer.pending == 0


@given(wire_frames(), st.data())
def test_bit_flip_then_valid_frame(frame: bytes, data: st.DataObject) -> None:
    damaged = bytearray(frame)
    position = data.draw(st.integers(0, len(frame) - 1))
    damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    follower = encode_request(7, 77, Command.READ_EVENTS, EventsRequest(1))
    found = Deframer().feed(bytes(damaged) + follower)
    assert found[-1].encode() == follower
    assert frame not in [f.encode() for f in found]


@given(wire_frames(), st.data())
def test_truncated_frame_then_valid_frame(frame: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(frame) - 1))
    follower = encode_request(9, 1, Command.READ_EVENTS, EventsRequest(2))
    found = Deframer().feed(frame[:cut] + follower)
    assert [f.encode() for f in found] == [follower]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    deframer = Deframer()
    for frame in deframer.feed(data):
        with contextlib.suppress(ProtocolError):
            decode_request(frame) if not frame.is_response else decode_response(frame)
    assert deframer.pending < MAX_FRAME


def test_impossible_length_rejected_without_waiting() -> None:
    deframer = Deframer()
    assert deframer.feed(bytes([START, 1, 0, 1, 241])) == []
    assert deframer.pending == 0
    assert deframer.stats.bad_headers == 1


def test_invalid_address_rejected_without_waiting() -> None:
    deframer = Deframer()
    deframer.feed(bytes([START, 0, 0, 1, 0]))
    assert deframer.pending == 0
    assert deframer.stats.bad_headers == 1


def test_stats_count_garbage_and_crc_errors() -> None:
    good = encode_request(1, 5, Command.READ_EVENTS, EventsRequest(9))
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    deframer = Deframer()
    frames = deframer.feed(b"\x00\x01\x02" + bytes(bad) + good)
    assert [f.encode() for f in frames] == [good]
    assert deframer.stats.frames == 1
    assert deframer.stats.crc_errors == 1
    assert deframer.stats.bytes_dropped == 3 + len(bad)
    assert deframer.stats.bytes_in == 3 + 2 * len(good)


def test_reset_discards_partial_frame() -> None:
    frame = encode_request(1, 5, Command.READ_EVENTS, EventsRequest(9))
    deframer = Deframer()
    deframer.feed(frame[:4])
    deframer.reset()
    assert deframer.pending == 0
    assert deframer.feed(frame)[0].encode() == frame


def test_merged_with_neighbours() -> None:
    first = encode_request(1, 1, Command.READ_EVENTS, EventsRequest(1))
    second = encode_request(1, 2, Command.READ_EVENTS, EventsRequest(2))
    deframer = Deframer()
    assert [f.encode() for f in deframer.feed(first + second[:3])] == [first]
    assert [f.encode() for f in deframer.feed(second[3:] + first)] == [second, first]
