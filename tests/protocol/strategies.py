"""Hypothesis strategies built from the declarative slot-bus layouts."""

from __future__ import annotations

import enum
from typing import Any

from hypothesis import strategies as st

from protocol.slotbus import COMMANDS, Command, Message, encode_request, encode_response
from protocol.slotbus.constants import MAX_ADDRESS, MAX_PAYLOAD, MIN_ADDRESS

_RANGES = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "h": (-0x8000, 0x7FFF),
    "I": (0, 0xFFFF_FFFF),
    "Q": (0, 0xFFFF_FFFF_FFFF_FFFF),
}


def _field_strategy(code: str, convert: Any) -> st.SearchStrategy[Any]:
    if code == "?" or getattr(convert, "__name__", "") == "_strict_bool":
        return st.booleans()
    if code.endswith("s"):
        return st.binary(min_size=int(code[:-1]), max_size=int(code[:-1]))
    low, high = _RANGES[code]
    if isinstance(convert, type) and issubclass(convert, enum.IntEnum):
        return st.sampled_from(list(convert))
    return st.integers(low, high).map(convert)


def messages(message_type: type[Message]) -> st.SearchStrategy[Message]:
    """Draw any valid instance of a payload layout that still fits one frame."""
    values = {name: _field_strategy(code, convert) for name, code, convert in message_type.FIELDS}
    if message_type.ITEMS is not None:
        name, item_type = message_type.ITEMS
        room = MAX_PAYLOAD - 1 - message_type.size() - 1
        values[name] = st.lists(messages(item_type), max_size=room // item_type.size()).map(tuple)
    return st.builds(message_type, **values)


addresses = st.integers(MIN_ADDRESS, MAX_ADDRESS)
sequences = st.integers(0, 0xFF)
commands = st.sampled_from(list(COMMANDS))


@st.composite
def wire_frames(draw: st.DrawFn) -> bytes:
    """Draw the bytes of any valid request or response frame."""
    command: Command = draw(commands)
    spec = COMMANDS[command]
    if draw(st.booleans()):
        return encode_request(
            draw(addresses), draw(sequences), command, draw(messages(spec.request))
        )
    return encode_response(draw(addresses), draw(sequences), command, draw(messages(spec.response)))
