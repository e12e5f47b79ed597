"""`cabinet-gateway cloud`: the scripted cloud for backend engineers.

`keygen` makes a signing key, `send` signs and publishes one command and waits for its result,
`watch` prints a cabinet's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cloud_link import CommandResult
from gateway.cli_help import TranslatedCommand, TranslatedGroup
from gateway.cloudtool import (
    AnyCommand,
    BrokerAddress,
    BrokerUnreachableError,
    BrokerUrlError,
    ReceivedMessage,
    ScriptedCloud,
    command_from_args,
    generate_key,
    load_private_key,
)
from gateway.i18n import N_, _

cloud_app = typer.Typer(cls=TranslatedGroup, no_args_is_help=True)

BrokerOption = Annotated[
    str, typer.Option("--broker", help=N_("Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT."))
]
CabinetOption = Annotated[str, typer.Option("--cabinet", help=N_("Cabinet id."))]
PrefixOption = Annotated[str, typer.Option("--prefix", help=N_("Topic prefix."))]
VersionOption = Annotated[
    str, typer.Option("--mqtt-version", help=N_("MQTT protocol version: 5 or 3.1.1."))
]
CaOption = Annotated[
    Path | None, typer.Option("--ca-file", help=N_("CA certificate for mqtts:// brokers."))
]


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(2)


def _broker(url: str) -> BrokerAddress:
    try:
        return BrokerAddress.parse(url)
    except BrokerUrlError as exc:
        raise _fail(str(exc)) from None


@cloud_app.command(
    "keygen",
    cls=TranslatedCommand,
    help=N_("Write a new Ed25519 signing key and print its public key."),
)
def keygen(
    out: Annotated[Path, typer.Argument(help=N_("File for the private key (PEM, mode 0600)."))],
) -> None:
    try:
        public = generate_key(out)
    except FileExistsError:
        raise _fail(_("{path} already exists; choose another file.", path=str(out))) from None
    Console().print(
        _(
            "Private key written to {path}. Trust this public key in the gateway config:",
            path=str(out),
        )
    )
    print(public)


@cloud_app.command(
    "send", cls=TranslatedCommand, help=N_("Sign and send one command, then wait for its result.")
)
def send(  # noqa: PLR0917 (typer maps each parameter to an option)
    command: Annotated[
        str,
        typer.Argument(help=N_("eject, slot_disable, slot_enable, lock, selftest or rebirth.")),
    ],
    broker: BrokerOption,
    cabinet: CabinetOption,
    key: Annotated[Path, typer.Option("--key", help=N_("Private key file from keygen."))],
    key_id: Annotated[str, typer.Option("--key-id", help=N_("Key id the gateway trusts."))],
    slot: Annotated[int | None, typer.Option(help=N_("Slot number."))] = None,
    order_id: Annotated[str | None, typer.Option(help=N_("Order id of an eject."))] = None,
    reason: Annotated[str | None, typer.Option(help=N_("Reason of a slot_disable."))] = None,
    lifetime: Annotated[
        float, typer.Option(help=N_("Seconds until the command's deadline."))
    ] = 60.0,
    timeout: Annotated[float, typer.Option(help=N_("Seconds to wait for the result."))] = 90.0,
    prefix: PrefixOption = "cabinets",
    mqtt_version: VersionOption = "3.1.1",
    ca_file: CaOption = None,
) -> None:
    try:
        model = command_from_args(command, slot, order_id, reason)
        private_key = load_private_key(key)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    cloud = ScriptedCloud(
        _broker(broker),
        cabinet_id=cabinet,
        key=private_key,
        key_id=key_id,
        topic_prefix=prefix,
        mqtt_version=mqtt_version,
        ca_file=ca_file,
    )
    try:
        result = asyncio.run(_send_and_wait(cloud, model, lifetime, timeout))
    except BrokerUnreachableError as exc:
        raise _fail(str(exc)) from None
    if result is None:
        raise _fail(
            _(
                "No result within {seconds} s. Check that the gateway runs, that it trusts key "
                "id {key_id}, and the cabinet id.",
                seconds=timeout,
                key_id=key_id,
            )
        )
    print(result)


async def _send_and_wait(
    cloud: ScriptedCloud, command: AnyCommand, lifetime: float, within_s: float
) -> str | None:
    results: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
    cloud.on_message = results.put_nowait
    async with cloud.connected(timeout_s=within_s):
        command_id = await cloud.send(command, lifetime_s=lifetime)
        try:
            async with asyncio.timeout(within_s):
                while True:
                    message = await results.get()
                    data = message.envelope.data if message.envelope else None
                    if isinstance(data, CommandResult) and data.command_id == command_id:
                        return message.raw.decode()
        except TimeoutError:
            return None


@cloud_app.command(
    "watch", cls=TranslatedCommand, help=N_("Print every message of a cabinet as JSON lines.")
)
def watch(
    broker: BrokerOption,
    cabinet: CabinetOption,
    prefix: PrefixOption = "cabinets",
    mqtt_version: VersionOption = "3.1.1",
    ca_file: CaOption = None,
) -> None:
    def show(message: ReceivedMessage) -> None:
        print(f"{message.topic} {message.raw.decode(errors='replace')}", flush=True)

    async def main() -> None:
        cloud = ScriptedCloud(
            _broker(broker),
            cabinet_id=cabinet,
            key=None,
            key_id="",
            topic_prefix=prefix,
            mqtt_version=mqtt_version,
            ca_file=ca_file,
            on_message=show,
        )
        await cloud.run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
