"""Requests and responses on top of frames: status bytes, layouts and error mapping."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.slotbus.codes import Command, Status
from protocol.slotbus.commands import COMMANDS, CommandSpec, command_spec
from protocol.slotbus.constants import RESPONSE_FLAG
from protocol.slotbus.errors import (
    PayloadError,
    UnknownCommandError,
    board_error_for,
)
from protocol.slotbus.frame import Frame, encode_frame
from protocol.slotbus.messages import Message


@dataclass(frozen=True, slots=True)
class Request:
    address: int
    sequence: int
    spec: CommandSpec
    body: Message


@dataclass(frozen=True, slots=True)
class Response:
    address: int
    sequence: int
    spec: CommandSpec
    body: Message


def _checked_spec(command: Command, body: Message, role: str) -> CommandSpec:
    spec = COMMANDS[command]
    expected = spec.request if role == "request" else spec.response
    if type(body) is not expected:
        raise PayloadError(
            f"{command.name} {role} takes {expected.__name__}, not {type(body).__name__}"
        )
    return spec


def encode_request(address: int, sequence: int, command: Command, body: Message) -> bytes:
    _checked_spec(command, body, "request")
    return encode_frame(address, sequence, command, body.encode())


def encode_response(address: int, sequence: int, command: Command, body: Message) -> bytes:
    _checked_spec(command, body, "response")
    payload = bytes((Status.OK,)) + body.encode()
    return encode_frame(address, sequence, command | RESPONSE_FLAG, payload)


def encode_error(address: int, sequence: int, command_id: int, status: Status) -> bytes:
    """Encode an error response; `command_id` may be an id the board does not know."""
    if status is Status.OK:
        raise PayloadError("an error response needs a status other than OK")
    return encode_frame(address, sequence, (command_id | RESPONSE_FLAG) & 0xFF, bytes((status,)))


def decode_request(frame: Frame) -> Request:
    if frame.is_response:
        raise PayloadError(f"frame 0x{frame.command:02X} is a response, not a request")
    spec = command_spec(frame.command_id)
    if spec is None:
        raise UnknownCommandError(frame.command_id)
    return Request(frame.address, frame.sequence, spec, spec.request.decode(frame.payload))


def decode_response(frame: Frame, *, allow_trailing: bool = False) -> Response:
    """Decode a response; raise the BoardError subclass of its status when it is not OK.

    Set `allow_trailing` for a board whose protocol_version is above PROTOCOL_VERSION: later
    versions may append fields that this codec does not know.
    """
    if not frame.is_response:
        raise PayloadError(f"frame 0x{frame.command:02X} is a request, not a response")
    spec = command_spec(frame.command_id)
    if not frame.payload:
        raise PayloadError("response without a status byte")
    status = frame.payload[0]
    if status != Status.OK:
        raise board_error_for(status, spec.command if spec else frame.command_id, frame.address)
    if spec is None:
        raise UnknownCommandError(frame.command_id)
    body = spec.response.decode(frame.payload[1:], allow_trailing=allow_trailing)
    return Response(frame.address, frame.sequence, spec, body)
