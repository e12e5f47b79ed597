"""Property tests: whatever the master sends, a board never crashes and responds in protocol."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cabinet_sim import Cabinet, ManualClock
from protocol.slotbus import (
    COMMANDS,
    Command,
    Deframer,
    Status,
    decode_response,
    encode_frame,
)
from tests.cabinet_sim.conftest import empty_config


def _cabinet() -> Cabinet:
    cabinet = Cabinet(empty_config(boards=2), clock=ManualClock())
    cabinet.insert_bank(2, charge=50)
    cabinet.insert_bank(3, readable=False)
    cabinet.advance(0.3)
    return cabinet


@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    cabinet = _cabinet()
    for frame in Deframer().feed(cabinet.handle_bytes(data)):
        assert frame.is_response
        assert frame.address in (1, 2)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3]),
            st.integers(0, 255),
            st.one_of(st.sampled_from(list(Command)), st.integers(0, 0x7F)),
            st.binary(max_size=12),
            st.floats(0, 5),
        ),
        max_size=25,
    )
)
def test_any_request_gets_a_protocol_answer(
    requests: list[tuple[int, int, int, bytes, float]],
) -> None:
    cabinet = _cabinet()
    deframer = Deframer()
    for address, sequence, command, payload, pause_s in requests:
        answers = address in cabinet.boards and cabinet.board(address).responsive
        request = encode_frame(address, sequence, command, payload)
        frames = deframer.feed(cabinet.handle_bytes(request))
        cabinet.advance(pause_s)
        if not answers:
            assert frames == []
            continue
        assert len(frames) == 1
        frame = frames[0]
        assert (frame.address, frame.sequence, frame.command_id) == (address, sequence, command)
        status = frame.payload[0]
        if command not in COMMANDS:
            assert status == Status.UNKNOWN_COMMAND
        elif status == Status.OK:
            decode_response(frame)  # a well-formed body of the command's response type
        else:
            assert frame.payload == bytes([status])
