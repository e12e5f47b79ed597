"""Generates the MQTT contract for backend engineers from the message models.

    python -m cloud_link.contract --write docs/   # regenerate docs/asyncapi.json and schemas
    python -m cloud_link.contract --check docs/   # exit 1 when the files are out of date

The JSON Schemas (draft 2020-12, as pydantic emits them) go to `docs/schemas/`, one file per
payload. `docs/asyncapi.json` is an AsyncAPI 3.0 document whose messages reference them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cloud_link.commands import CommandBody, SignedCommand
from cloud_link.messages import (
    SCHEMA_VERSION,
    BatteryHealth,
    Birth,
    CommandResult,
    EjectOutcomeEvent,
    Envelope,
    FaultEvent,
    Heartbeat,
    LinkStatus,
    LowStockEvent,
    ReturnEvent,
    SecurityEvent,
    StateChange,
    StockReport,
)

ASYNCAPI_FILE = "asyncapi.json"
SCHEMA_DIR = "schemas"


@dataclass(frozen=True)
class Channel:
    """One topic of the cabinet namespace and the payload on it."""

    name: str
    suffix: str  # after `<prefix>/<cabinet_id>/`
    schema: str  # file name under schemas/
    model: type[BaseModel]
    sender: str  # "cabinet" or "cloud"
    summary: str


CHANNELS: tuple[Channel, ...] = (
    Channel(
        "status",
        "status",
        "status.json",
        LinkStatus,
        "cabinet",
        "Retained online/offline status; the offline value is the MQTT will.",
    ),
    Channel(
        "birth",
        "birth",
        "birth.json",
        Envelope[Birth],
        "cabinet",
        "Full cabinet state after every connect and on a rebirth command.",
    ),
    Channel(
        "state",
        "state",
        "state_change.json",
        Envelope[StateChange],
        "cabinet",
        "A slot changed state (slot 0 is the cabinet).",
    ),
    Channel(
        "battery",
        "battery",
        "battery_health.json",
        Envelope[BatteryHealth],
        "cabinet",
        "Battery health of the bank in one slot.",
    ),
    Channel(
        "stock",
        "stock",
        "stock.json",
        Envelope[StockReport],
        "cabinet",
        "Slot counts by state (rentable, charging, empty, faulted).",
    ),
    Channel(
        "heartbeat",
        "heartbeat",
        "heartbeat.json",
        Envelope[Heartbeat],
        "cabinet",
        "Periodic liveness with link and outbox statistics.",
    ),
    Channel(
        "eventEjectOutcome",
        "event/eject_outcome",
        "eject_outcome.json",
        Envelope[EjectOutcomeEvent],
        "cabinet",
        "The final outcome of an eject.",
    ),
    Channel(
        "eventBankReturned",
        "event/bank_returned",
        "bank_returned.json",
        Envelope[ReturnEvent],
        "cabinet",
        "A bank was inserted into a slot.",
    ),
    Channel(
        "eventFault",
        "event/fault",
        "fault.json",
        Envelope[FaultEvent],
        "cabinet",
        "A fault was raised or cleared.",
    ),
    Channel(
        "eventSecurity",
        "event/security",
        "security.json",
        Envelope[SecurityEvent],
        "cabinet",
        "A rejected unauthenticated command or a tamper.",
    ),
    Channel(
        "eventLowStock",
        "event/low_stock",
        "low_stock.json",
        Envelope[LowStockEvent],
        "cabinet",
        "Rentable banks fell below the threshold.",
    ),
    Channel(
        "commandResult",
        "cmd/result",
        "command_result.json",
        Envelope[CommandResult],
        "cabinet",
        "The one final result of a command, or a rejection.",
    ),
    Channel(
        "command",
        "cmd",
        "command_request.json",
        SignedCommand,
        "cloud",
        "Signed command request (QoS 1).",
    ),
)

EXTRA_SCHEMAS: dict[str, type[BaseModel]] = {"command_body.json": CommandBody}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return every schema file name with its JSON Schema."""
    schemas: dict[str, dict[str, Any]] = {}
    for channel in CHANNELS:
        schemas[channel.schema] = _schema(channel.model, channel.schema)
    for name, model in EXTRA_SCHEMAS.items():
        schemas[name] = _schema(model, name)
    return schemas


def _schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}


def asyncapi_document() -> dict[str, Any]:
    """Return the AsyncAPI 3.0 description of the cabinet topics."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel in CHANNELS:
        message_name = f"{channel.name}Message"
        messages[message_name] = {
            "name": message_name,
            "contentType": "application/json",
            "payload": {"$ref": f"./{SCHEMA_DIR}/{channel.schema}"},
        }
        channels[channel.name] = {
            "address": "{prefix}/{cabinetId}/" + channel.suffix,
            "summary": channel.summary,
            "parameters": {
                "prefix": {"description": "Configured topic prefix, `cabinets` by default."},
                "cabinetId": {"description": "Cabinet id, `[A-Za-z0-9_.-]{1,64}`."},
            },
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
        }
        # Operations are described from the backend's point of view.
        action = "receive" if channel.sender == "cabinet" else "send"
        operations[f"{action}{channel.name[0].upper()}{channel.name[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel.name}"},
            "messages": [{"$ref": f"#/channels/{channel.name}/messages/{message_name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Charging cabinet MQTT API",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Topics of one cabinet gateway. See docs/mqtt-api.md for the rules "
            "on sequence numbers, lanes, signatures and deadlines.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered_files() -> dict[str, str]:
    """Return every generated file, path relative to the docs directory, with its text."""
    files = {ASYNCAPI_FILE: _dump(asyncapi_document())}
    for name, schema in json_schemas().items():
        files[f"{SCHEMA_DIR}/{name}"] = _dump(schema)
    return files


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stale_files(docs_dir: Path) -> list[str]:
    """Return generated files that are missing or differ under `docs_dir`."""
    stale = []
    for relative, text in rendered_files().items():
        path = docs_dir / relative
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(relative)
    return stale


def write(docs_dir: Path) -> list[str]:
    """Write every generated file under `docs_dir` and return their relative paths."""
    written = []
    for relative, text in rendered_files().items():
        path = docs_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(relative)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="DOCS_DIR", help="write the files here")
    mode.add_argument("--check", type=Path, metavar="DOCS_DIR", help="compare with files here")
    args = parser.parse_args(argv)
    if args.write is not None:
        for relative in write(args.write):
            print(f"wrote {args.write / relative}")
        return 0
    stale = stale_files(args.check)
    for relative in stale:
        print(f"out of date: {args.check / relative}", file=sys.stderr)
    if stale:
        print("run: python -m cloud_link.contract --write docs/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
