"""The command table: every slot-bus command declared once, with its request and response."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.slotbus.codes import Command
from protocol.slotbus.messages import (
    AckAndRead,
    BankBatch,
    BankData,
    ChargingRequest,
    ChargingResult,
    Empty,
    EventAck,
    EventAckResult,
    EventBatch,
    EventsRequest,
    Identity,
    LockResult,
    Message,
    ResetRequest,
    SelfTestResult,
    SlotRange,
    SlotRef,
    SlotsStatus,
    TokenRef,
    UnlockRequest,
    UnlockResult,
    UnlockStatus,
)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    command: Command
    request: type[Message]
    response: type[Message]
    reply_timeout_s: float  # board processing time allowed on top of the wire time
    retry_safe: bool  # a repeat after a lost reply cannot act twice
    summary: str


COMMANDS: dict[Command, CommandSpec] = {
    spec.command: spec
    for spec in (
        CommandSpec(Command.IDENTIFY, Empty, Identity, 0.05, True, "board identity"),
        CommandSpec(Command.GET_SLOTS, Empty, SlotsStatus, 0.05, True, "status of all slots"),
        CommandSpec(Command.GET_BANK, SlotRef, BankData, 0.1, True, "full bank data"),
        CommandSpec(
            Command.GET_BANKS, SlotRange, BankBatch, 0.1, True, "bank data of a slot range"
        ),
        CommandSpec(
            Command.GET_SLOT_RANGE, SlotRange, SlotsStatus, 0.05, True, "status of a slot range"
        ),
        CommandSpec(
            Command.UNLOCK, UnlockRequest, UnlockResult, 0.5, True, "unlock with take window"
        ),
        CommandSpec(Command.LOCK, SlotRef, LockResult, 0.5, True, "lock a slot"),
        CommandSpec(
            Command.SET_CHARGING, ChargingRequest, ChargingResult, 0.05, True, "charging on/off"
        ),
        CommandSpec(Command.SELF_TEST, SlotRef, SelfTestResult, 1.0, True, "slot self-test"),
        CommandSpec(Command.RESET, ResetRequest, Empty, 0.05, False, "reset the board"),
        CommandSpec(Command.QUERY_UNLOCK, TokenRef, UnlockStatus, 0.05, True, "outcome of a token"),
        CommandSpec(
            Command.READ_EVENTS, EventsRequest, EventBatch, 0.05, True, "read latched events"
        ),
        CommandSpec(Command.ACK_EVENTS, EventAck, EventAckResult, 0.05, True, "acknowledge"),
        CommandSpec(
            Command.ACK_AND_READ_EVENTS,
            AckAndRead,
            EventBatch,
            0.05,
            True,
            "acknowledge, then read latched events",
        ),
    )
}


def command_spec(command_id: int) -> CommandSpec | None:
    """Return the table entry for a raw command id, or None when the id is unknown."""
    try:
        return COMMANDS[Command(command_id)]
    except ValueError:
        return None
