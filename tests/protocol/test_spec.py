"""The specification document and the command table must describe the same protocol."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.slotbus import COMMANDS, Command, EventKind, Status, UnlockRequest, encode_request
from protocol.slotbus.codes import Capability, SlotFault

SPEC = (Path(__file__).parents[2] / "docs" / "slot-bus-protocol.md").read_text(encoding="utf-8")


def test_command_ids_unique() -> None:
    ids = [int(command) for command in Command]
    assert len(ids) == len(set(ids))
    assert set(COMMANDS) == set(Command)


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
def test_every_command_has_spec_section(command: Command) -> None:
    heading = rf"^### \d+\.\d+ {command.name} \(`0x{command:02X}`\)"
    assert re.search(heading, SPEC, re.MULTILINE), f"no section for {command.name}"
    assert f"| `0x{command:02X}` | {command.name} |" in SPEC


@pytest.mark.parametrize("status", list(Status))
def test_every_status_in_spec(status: Status) -> None:
    assert f"| {status.value} | {status.name} |" in SPEC


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_kind_in_spec(kind: EventKind) -> None:
    assert f"| {kind.value} | {kind.name} |" in SPEC


@pytest.mark.parametrize("flag", list(SlotFault) + list(Capability))
def test_every_bit_in_spec(flag: SlotFault | Capability) -> None:
    assert f"`0x{flag.value:04X}` {flag.name}" in SPEC


def test_spec_example_frame_matches_codec() -> None:
    frame = encode_request(1, 7, Command.UNLOCK, UnlockRequest(3, 30, 0xDEADBEEF))
    assert frame.hex(" ").upper() in SPEC
