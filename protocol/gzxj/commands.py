"""The command table: every GZXJ command word declared once, with its request and reply."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.gzxj.codes import Command, Side
from protocol.gzxj.messages import (
    ForceUnlockReply,
    ForceUnlockRequest,
    Message,
    QueryRequest,
    RentConfirm,
    RentReply,
    RentRequest,
    RentSlotRequest,
    ReturnConfirm,
    ReturnReport,
    RulesReply,
    RulesRequest,
    SlotReport,
)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    command: Command
    sender: Side  # the side that starts the exchange
    request: type[Message]
    reply: type[Message] | None  # sent back under the same command word
    answered_by: Command | None  # command word of the frame that replies to the request
    summary: str


COMMANDS: dict[Command, CommandSpec] = {
    spec.command: spec
    for spec in (
        CommandSpec(Command.CQ, Side.HOST, QueryRequest, None, Command.AC, "query all slots"),
        CommandSpec(Command.AC, Side.STATION, SlotReport, None, None, "slot report"),
        CommandSpec(Command.BW, Side.HOST, RentRequest, RentReply, None, "rent, station picks"),
        CommandSpec(Command.FB, Side.HOST, RentSlotRequest, RentReply, None, "rent from a slot"),
        CommandSpec(Command.BR, Side.HOST, RentConfirm, None, None, "confirm a rent result"),
        CommandSpec(Command.RS, Side.STATION, ReturnReport, ReturnConfirm, None, "return"),
        CommandSpec(
            Command.FA, Side.HOST, ForceUnlockRequest, ForceUnlockReply, None, "force unlock"
        ),
        CommandSpec(Command.CM, Side.HOST, RulesRequest, RulesReply, None, "renting rules"),
    )
}


def command_spec(word: str) -> CommandSpec | None:
    """Return the table entry for a command word, or None when the word is unknown."""
    try:
        return COMMANDS[Command(word)]
    except ValueError:
        return None
