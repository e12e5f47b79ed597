"""`cabinet-gateway frame decode|encode`: read and build captured frames of every slot protocol."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from gateway.cli_help import TranslatedCommand, TranslatedGroup
from gateway.i18n import N_, _
from protocol import gzxj, s1tt, slotbus
from protocol.framedecode import PROTOCOLS, decode_frame, encode_frame

frame_app = typer.Typer(cls=TranslatedGroup, no_args_is_help=True)

ProtocolOption = Annotated[
    str,
    typer.Option("--protocol", "-p", help=N_("Slot protocol: native, gzxj or s1tt.")),
]
FRAME_ERRORS = (slotbus.ProtocolError, gzxj.GzxjError, s1tt.S1ttError, ValueError)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise _fail(_("Unknown protocol {name}; use native, gzxj or s1tt.", name=protocol))


@frame_app.command(
    "decode", cls=TranslatedCommand, help=N_("Decode one captured frame and print it as JSON.")
)
def decode(
    data: Annotated[
        str, typer.Argument(help=N_("The frame: hex for native and s1tt, text for gzxj."))
    ],
    protocol: ProtocolOption = "native",
    direction: Annotated[
        str | None,
        typer.Option(help=N_("request or reply, for frames that do not say which they are.")),
    ] = None,
) -> None:
    _check_protocol(protocol)
    try:
        decoded = decode_frame(protocol, data, direction=direction)
    except FRAME_ERRORS as exc:
        raise _fail(_("Cannot decode the frame: {error}", error=str(exc))) from None
    print(json.dumps(decoded, ensure_ascii=False, indent=2))


@frame_app.command(
    "encode", cls=TranslatedCommand, help=N_("Build a frame from JSON (the shape decode prints).")
)
def encode(
    spec: Annotated[str, typer.Argument(help=N_("JSON object: command, direction, fields, ..."))],
    protocol: ProtocolOption = "native",
) -> None:
    _check_protocol(protocol)
    try:
        parsed = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise _fail(_("The frame description is not valid JSON: {error}", error=str(exc))) from None
    if not isinstance(parsed, dict):
        raise _fail(_("The frame description must be a JSON object."))
    try:
        print(encode_frame(protocol, parsed))
    except FRAME_ERRORS as exc:
        raise _fail(_("Cannot encode the frame: {error}", error=str(exc))) from None
