"""Decode and encode single captured frames of every slot protocol, for technicians.

`decode_frame` takes one frame as hex (native slot bus, S1TT) or as text (GZXJ) and returns
a JSON-ready dict: the command, its fields, and the CRC with its value. `encode_frame` takes
the same dict shape and returns the frame. Errors are raised as the protocol's own
exceptions and name what is wrong: the CRC with its expected and actual value, the length,
or the unknown command. Unknown protocol names and malformed specs raise ValueError.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from typing import Any, cast

from protocol import gzxj, s1tt, slotbus
from protocol.crc import crc16_modbus
from protocol.gzxj import fields as gzxj_fields
from protocol.gzxj.constants import DEFAULT_ADDRESS as GZXJ_DEFAULT_ADDRESS
from protocol.s1tt import fields as s1tt_fields
from protocol.slotbus.constants import CRC_SIZE as NATIVE_CRC_SIZE
from protocol.slotbus.constants import HEADER_SIZE as NATIVE_HEADER_SIZE
from protocol.slotbus.constants import START as NATIVE_START
from protocol.slotbus.messages import message_fields as native_fields

PROTOCOLS = ("native", "gzxj", "s1tt")
DIRECTIONS = ("request", "reply")
"""Direction names; "response" is accepted as another name for "reply"."""

_HEX_NOISE = re.compile(r"0x|[\s:,\-]", re.IGNORECASE)


def decode_frame(protocol: str, data: str, *, direction: str | None = None) -> dict[str, Any]:
    """Decode one frame; `direction` ("request" or "reply") settles an ambiguous S1TT frame."""
    wanted = _direction(direction) if direction is not None else None
    if protocol == "native":
        return _decode_native(_hex_bytes(data, slotbus.FrameError))
    if protocol == "s1tt":
        return _decode_s1tt(_hex_bytes(data, s1tt.FrameError), wanted)
    if protocol == "gzxj":
        # Captures often carry the line end and a NUL that some stations send before a frame.
        return _decode_gzxj(data.strip().strip("\x00"), wanted)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def encode_frame(protocol: str, spec: dict[str, Any]) -> str:
    """Encode one frame from a dict shaped like decode_frame's output.

    Keys: command (name), direction (request by default), address, fields; for native also
    sequence, and for a native or S1TT reply optionally status (name or number).
    """
    if protocol == "native":
        return _encode_native(spec).hex(" ").upper()
    if protocol == "s1tt":
        return _encode_s1tt(spec).hex(" ").upper()
    if protocol == "gzxj":
        return _encode_gzxj(spec)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def to_json(value: Any) -> Any:
    """Return `value` with enums and flags as names, bytes as hex and records as dicts."""
    if isinstance(value, enum.IntFlag):
        names: list[str] = []
        named = 0
        for member in type(value):
            if member in value:
                names.append(str(member.name))
                named |= member
        # Bits that the enum does not name keep the raw number, so no bit is lost.
        return names if named == value else int(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bytes):
        return value.hex().upper()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    return value


def _direction(name: str) -> str:
    normalised = "reply" if name == "response" else name
    if normalised not in DIRECTIONS:
        raise ValueError(f"direction {name!r} must be request or reply")
    return normalised


def _hex_bytes(data: str, error: type[Exception]) -> bytes:
    cleaned = _HEX_NOISE.sub("", data)
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise error(f"data is not hex: {data[:40]!r}") from exc


def _enum_value(kind: type[enum.Enum], value: Any) -> Any:
    """Accept an enum member by name, a number, or a list of flag names."""
    if issubclass(kind, enum.IntFlag) and isinstance(value, list):
        result = kind(0)
        for name in value:
            result |= kind[name]
        return result
    if isinstance(value, str) and not value.isdigit():
        return kind[value]
    return kind(int(value))


def _status_value(kind: type[enum.IntEnum], value: Any) -> int:
    """Accept a status by name or by number; a number the enum lacks stays a number."""
    if isinstance(value, str) and not value.isdigit():
        return kind[value]
    number = int(value)
    try:
        return kind(number)
    except ValueError:
        return number


def _status_name(kind: type[enum.IntEnum], number: int) -> str | int:
    try:
        return kind(number).name
    except ValueError:
        return number


def _required(spec: dict[str, Any], key: str) -> Any:
    if key not in spec:
        raise ValueError(f"spec is missing {key!r}")
    return spec[key]


def _build(layout: type[Any], kwargs: dict[str, Any]) -> Any:
    try:
        return layout(**kwargs)
    except TypeError as exc:
        raise ValueError(f"cannot build {layout.__name__}: {exc}") from exc


# Native slot bus -------------------------------------------------------------------------


def _parse_native(raw: bytes) -> slotbus.Frame:
    minimum = NATIVE_HEADER_SIZE + NATIVE_CRC_SIZE
    if len(raw) < minimum:
        raise slotbus.FrameError(f"frame of {len(raw)} bytes is shorter than the minimum {minimum}")
    if raw[0] != NATIVE_START:
        raise slotbus.FrameError(f"first byte is 0x{raw[0]:02X}, expected 0x{NATIVE_START:02X}")
    total = NATIVE_HEADER_SIZE + raw[4] + NATIVE_CRC_SIZE
    if len(raw) != total:
        raise slotbus.FrameError(
            f"length byte {raw[4]} means a frame of {total} bytes, but {len(raw)} were given"
        )
    expected = crc16_modbus(raw[1:-NATIVE_CRC_SIZE])
    actual = int.from_bytes(raw[-NATIVE_CRC_SIZE:], "little")
    if expected != actual:
        raise slotbus.FrameError(
            f"CRC mismatch: expected 0x{expected:04X}, frame carries 0x{actual:04X}"
        )
    frame = slotbus.Frame(raw[1], raw[2], raw[3], bytes(raw[NATIVE_HEADER_SIZE:-NATIVE_CRC_SIZE]))
    encoded = frame.encode()  # also checks the address range
    if encoded != raw:
        raise slotbus.FrameError("frame does not re-encode to the same bytes")
    return frame


def _decode_native(raw: bytes) -> dict[str, Any]:
    frame = _parse_native(raw)
    result: dict[str, Any] = {
        "protocol": "native",
        "address": frame.address,
        "sequence": frame.sequence,
        "command_id": frame.command_id,
        "length": len(raw),
        "crc": {"value": f"{int.from_bytes(raw[-2:], 'little'):04X}", "valid": True},
    }
    if not frame.is_response:
        request = slotbus.decode_request(frame)
        fields = to_json(native_fields(request.body))
        return {
            **result,
            "direction": "request",
            "command": request.spec.command.name,
            "fields": fields,
        }
    try:
        response = slotbus.decode_response(frame)
    except slotbus.BoardError as exc:
        name = exc.command.name if isinstance(exc.command, slotbus.Command) else None
        status = _status_name(slotbus.Status, frame.payload[0])
        return {**result, "direction": "reply", "command": name, "status": status, "fields": {}}
    fields = to_json(native_fields(response.body))
    return {
        **result,
        "direction": "reply",
        "command": response.spec.command.name,
        "status": "OK",
        "fields": fields,
    }


def _native_message(layout: type[slotbus.Message], values: dict[str, Any]) -> slotbus.Message:
    kwargs: dict[str, Any] = {}
    for name, code, convert in layout.FIELDS:
        value = _required(values, name)
        if code.endswith("s"):
            kwargs[name] = bytes.fromhex(value).rjust(int(code[:-1]), b"\x00")
        elif isinstance(convert, enum.EnumMeta):
            kwargs[name] = _enum_value(cast(type[enum.Enum], convert), value)
        else:
            kwargs[name] = convert(value)
    if layout.ITEMS is not None:
        item_name, item_type = layout.ITEMS
        items = _required(values, item_name)
        kwargs[item_name] = tuple(_native_message(item_type, item) for item in items)
    result: slotbus.Message = _build(layout, kwargs)
    return result


def _encode_native(spec: dict[str, Any]) -> bytes:
    command = slotbus.Command[_required(spec, "command")]
    address = int(_required(spec, "address"))
    sequence = int(_required(spec, "sequence"))
    direction = _direction(spec.get("direction", "request"))
    status = _status_value(slotbus.Status, spec.get("status", "OK"))
    table = slotbus.COMMANDS[command]
    if direction == "reply" and status != slotbus.Status.OK:
        return slotbus.encode_error(address, sequence, command, cast(slotbus.Status, status))
    layout = table.request if direction == "request" else table.response
    body = _native_message(layout, spec.get("fields", {}))
    if direction == "request":
        return slotbus.encode_request(address, sequence, command, body)
    return slotbus.encode_response(address, sequence, command, body)


# S1TT --------------------------------------------------------------------------------------


def _decode_s1tt(raw: bytes, wanted: str | None) -> dict[str, Any]:
    frame = s1tt.parse_frame(raw)
    result: dict[str, Any] = {
        "protocol": "s1tt",
        "address": frame.address,
        "command_id": frame.command_id,
        "length": len(raw),
        "crc": {"value": f"{int.from_bytes(raw[-2:], 'little'):04X}", "valid": True},
    }
    decoders: list[tuple[str, Callable[[s1tt.Frame], dict[str, Any]]]] = [
        ("request", _s1tt_request),
        ("reply", _s1tt_reply),
    ]
    readings: list[dict[str, Any]] = []
    errors: list[s1tt.S1ttError] = []
    for direction, decode in decoders:
        if wanted is not None and direction != wanted:
            continue
        try:
            readings.append({**result, "direction": direction, **decode(frame)})
        except s1tt.S1ttError as exc:
            errors.append(exc)
    if not readings:
        if len(errors) == 1 or isinstance(errors[0], s1tt.UnknownCommandError):
            raise errors[0]
        raise s1tt.PayloadError(
            f"fits neither the request layout ({errors[0]}) nor the reply layout ({errors[1]})"
        )
    if len(readings) > 1:
        # No byte on the wire marks a frame as a request or a reply, so both readings are returned.
        return {**readings[0], "alternatives": readings[1:]}
    return readings[0]


def _s1tt_request(frame: s1tt.Frame) -> dict[str, Any]:
    request = s1tt.decode_request(frame)
    return {
        "command": request.spec.command.name,
        "fields": to_json(s1tt.message_fields(request.body)),
    }


def _s1tt_reply(frame: s1tt.Frame) -> dict[str, Any]:
    try:
        reply = s1tt.decode_reply(frame)
    except s1tt.BoardError as exc:
        command = exc.command.name if isinstance(exc.command, s1tt.Command) else None
        status = _status_name(s1tt.Status, exc.raw_status)
        return {"command": command, "status": status, "fields": {}}
    fields = to_json(s1tt.message_fields(reply.body))
    if isinstance(reply.body, s1tt.SlotsReply):
        fields["slots"] = to_json(reply.body.slots)
    return {"command": reply.spec.command.name, "status": "OK", "fields": fields}


def _s1tt_value(codec: s1tt_fields.FieldCodec, value: Any) -> Any:
    if isinstance(codec, s1tt_fields.Optional):
        return None if value is None else _s1tt_value(codec.inner, value)
    if isinstance(codec, s1tt_fields.Chunk):
        return bytes.fromhex(value)
    if isinstance(codec, s1tt_fields.Records):
        return tuple(_s1tt_message(codec.item, item) for item in value)
    if isinstance(codec, s1tt_fields.UInt) and isinstance(codec.convert, type):
        return _enum_value(codec.convert, value)
    return value


def _s1tt_message(layout: type[s1tt.Message], values: dict[str, Any]) -> s1tt.Message:
    kwargs = {
        name: _s1tt_value(
            codec,
            values.get(name)
            if isinstance(codec, s1tt_fields.Optional)
            else _required(values, name),
        )
        for name, codec in layout.FIELDS
    }
    result: s1tt.Message = _build(layout, kwargs)
    return result


def _encode_s1tt(spec: dict[str, Any]) -> bytes:
    command = s1tt.Command[_required(spec, "command")]
    address = int(_required(spec, "address"))
    direction = _direction(spec.get("direction", "request"))
    status = _status_value(s1tt.Status, spec.get("status", "OK"))
    table = s1tt.COMMANDS[command]
    if direction == "reply" and status != s1tt.Status.OK:
        return s1tt.encode_error(address, command, status)
    layout = table.request if direction == "request" else table.reply
    body = _s1tt_message(layout, spec.get("fields", {}))
    if direction == "request":
        return s1tt.encode_request(address, command, body)
    return s1tt.encode_reply(address, command, body)


# GZXJ --------------------------------------------------------------------------------------


def _decode_gzxj(text: str, wanted: str | None) -> dict[str, Any]:
    frame = gzxj.parse_frame(text)
    decoded = gzxj.decode_frame(frame)
    if wanted is not None and decoded.role != wanted:
        raise gzxj.PayloadError(
            f"{frame.command} with {len(frame.fields)} fields is a {decoded.role}, not a {wanted}"
        )
    sender = decoded.spec.sender
    if decoded.role is gzxj.Role.REPLY:
        sender = gzxj.Side.STATION if sender is gzxj.Side.HOST else gzxj.Side.HOST
    return {
        "protocol": "gzxj",
        "address": frame.address,
        "command": decoded.spec.command.value,
        "direction": decoded.role.value,
        "sender": sender.value,
        "fields": to_json(gzxj.message_fields(decoded.body)),
        "length": len(text),
        "crc": {"value": text[-5:-1], "valid": True},
    }


def _gzxj_message(layout: type[gzxj.Message], values: dict[str, Any]) -> gzxj.Message:
    kwargs: dict[str, Any] = {}
    for name, codec in layout.FIELDS:
        value = _required(values, name)
        if isinstance(codec, gzxj_fields.Records):
            value = tuple(_build(codec.item, item) for item in value)
        elif isinstance(codec, gzxj_fields.Int) and isinstance(codec.convert, type):
            value = _enum_value(codec.convert, value)
        kwargs[name] = value
    result: gzxj.Message = _build(layout, kwargs)
    return result


def _encode_gzxj(spec: dict[str, Any]) -> str:
    command = gzxj.Command(_required(spec, "command"))
    direction = _direction(spec.get("direction", "request"))
    table = gzxj.COMMANDS[command]
    layout = table.request if direction == "request" else table.reply
    if layout is None:
        raise gzxj.PayloadError(f"{command} has no reply under the same command word")
    body = _gzxj_message(layout, spec.get("fields", {}))
    address = str(spec.get("address", GZXJ_DEFAULT_ADDRESS))
    return gzxj.encode_message(command, body, address)
