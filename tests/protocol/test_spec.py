"""The specification document and the command table must describe the same protocol."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.slotbus import (
    COMMANDS,
    BankData,
    Command,
    EventKind,
    Status,
    UnlockRequest,
    encode_request,
)
from protocol.slotbus.codes import Capability, SlotFault
from protocol.slotbus.constants import MAX_BANKS_PER_READ, MAX_EVENTS_PER_READ, PROTOCOL_VERSION

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


def _allowance_row(command: Command) -> str:
    table = SPEC.split("| command | processing allowance |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if re.search(rf"\b{command.name}\b", line)]
    assert len(rows) == 1, f"{command.name} is in {len(rows)} rows of the allowance table"
    return rows[0]


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
def test_processing_allowance_matches_table(command: Command) -> None:
    spec = COMMANDS[command]
    row = _allowance_row(command)
    assert f"| {round(spec.reply_timeout_s * 1000)} ms |" in row
    assert ("yes" in row) == (spec.retry_safe or command is Command.RESET)


def test_spec_states_protocol_version() -> None:
    assert SPEC.startswith(f"# Slot-bus protocol, version {PROTOCOL_VERSION}\n")
    assert f"IDENTIFY's protocol_version is {PROTOCOL_VERSION} for this document" in SPEC


def test_spec_read_limits_match_constants() -> None:
    assert f"| events per READ_EVENTS | 1 to {MAX_EVENTS_PER_READ} |" in SPEC
    assert f"| banks per GET_BANKS | 1 to {MAX_BANKS_PER_READ} |" in SPEC
    assert f"count (1, 1 to {MAX_BANKS_PER_READ})" in SPEC
    assert f"one {BankData.size()}-byte bank record" in SPEC
    full_payload = 2 + MAX_BANKS_PER_READ * BankData.size()
    assert f"take {full_payload} of the 240 payload bytes" in SPEC
