"""Messages on top of frames. A command word and a field count select the layout.

Every command's request and reply layouts have different field counts, so a frame can be
decoded without knowing who sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.gzxj.codes import Command
from protocol.gzxj.commands import COMMANDS, CommandSpec, command_spec
from protocol.gzxj.constants import DEFAULT_ADDRESS
from protocol.gzxj.errors import PayloadError, UnknownCommandError
from protocol.gzxj.frame import Frame, encode_frame, parse_frame
from protocol.gzxj.messages import Message


class Role(StrEnum):
    REQUEST = "request"
    REPLY = "reply"


@dataclass(frozen=True, slots=True)
class Decoded:
    address: str
    spec: CommandSpec
    role: Role
    body: Message


def role_of(command: Command, body: Message) -> Role:
    """Return whether `body` is the request or the reply layout of `command`."""
    spec = COMMANDS[command]
    if type(body) is spec.request:
        return Role.REQUEST
    if spec.reply is not None and type(body) is spec.reply:
        return Role.REPLY
    raise PayloadError(f"{command} does not carry {type(body).__name__}")


def encode_message(command: Command, body: Message, address: str = DEFAULT_ADDRESS) -> str:
    role_of(command, body)
    return encode_frame(address, command.value, body.format())


def decode_frame(frame: Frame) -> Decoded:
    spec = command_spec(frame.command)
    if spec is None:
        raise UnknownCommandError(frame.command)
    layouts = [(Role.REQUEST, spec.request)]
    if spec.reply is not None:
        layouts.append((Role.REPLY, spec.reply))
    errors = []
    for role, layout in layouts:
        count = layout.field_count()
        if count is not None and count != len(frame.fields):
            errors.append(f"{role} has {count} fields")
            continue
        return Decoded(frame.address, spec, role, layout.parse(frame.fields))
    raise PayloadError(
        f"{spec.command} with {len(frame.fields)} fields matches no layout ({'; '.join(errors)})"
    )


def decode_text(text: str) -> Decoded:
    """Check and decode the text of one frame."""
    return decode_frame(parse_frame(text))
