"""Requests and replies on top of frames: command byte, status byte and layouts.

A request payload is the command byte and the request layout. A reply payload is the
command byte, a status byte and, when the status is OK, the reply layout. Nothing in a
frame marks it as a request or a reply, so the caller says which one it expects.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.s1tt.codes import Command, Status
from protocol.s1tt.commands import COMMANDS, CommandSpec, command_spec
from protocol.s1tt.errors import PayloadError, S1ttError, UnknownCommandError, board_error_for
from protocol.s1tt.frame import Frame, encode_frame
from protocol.s1tt.messages import Message


@dataclass(frozen=True, slots=True)
class Request:
    address: int
    spec: CommandSpec
    body: Message


@dataclass(frozen=True, slots=True)
class Reply:
    address: int
    spec: CommandSpec
    body: Message


def _checked_spec(command: Command, body: Message, role: str) -> CommandSpec:
    spec = COMMANDS[command]
    expected = spec.request if role == "request" else spec.reply
    if type(body) is not expected:
        raise PayloadError(
            f"{command.name} {role} takes {expected.__name__}, not {type(body).__name__}"
        )
    return spec


def encode_request(address: int, command: Command, body: Message) -> bytes:
    _checked_spec(command, body, "request")
    return encode_frame(address, bytes((command,)) + body.encode())


def encode_reply(address: int, command: Command, body: Message) -> bytes:
    _checked_spec(command, body, "reply")
    return encode_frame(address, bytes((command, Status.OK)) + body.encode())


def encode_error(address: int, command_id: int, status: int) -> bytes:
    """Encode a reply with a status other than OK; `command_id` may be unknown to the table."""
    if status == Status.OK or not 0 <= status <= 0xFF:
        raise PayloadError(f"an error reply needs a status byte other than OK, not {status}")
    return encode_frame(address, bytes((command_id & 0xFF, status)))


def _spec_of(frame: Frame) -> CommandSpec:
    spec = command_spec(frame.command_id)
    if spec is None:
        raise UnknownCommandError(frame.command_id)
    return spec


def decode_request(frame: Frame) -> Request:
    spec = _spec_of(frame)
    return Request(frame.address, spec, spec.request.decode(frame.payload[1:]))


def decode_reply(frame: Frame) -> Reply:
    """Decode a reply; raise the BoardError subclass of its status when it is not OK."""
    if len(frame.payload) < 2:
        raise PayloadError("reply without a status byte")
    status = frame.payload[1]
    if status != Status.OK:
        if len(frame.payload) != 2:
            raise PayloadError(f"error reply with {len(frame.payload) - 2} bytes after the status")
        known = command_spec(frame.command_id)
        raise board_error_for(status, known.command if known else frame.command_id, frame.address)
    spec = _spec_of(frame)
    return Reply(frame.address, spec, spec.reply.decode(frame.payload[2:]))


def fits_table(frame: Frame) -> bool:
    """Check whether the frame is a request or a reply that the command table accepts."""
    if command_spec(frame.command_id) is None:
        return False
    for decode in (decode_request, decode_reply):
        try:
            decode(frame)
        except S1ttError as exc:
            if isinstance(exc, PayloadError | UnknownCommandError):
                continue
            return True  # a well-formed error reply
        return True
    return False
