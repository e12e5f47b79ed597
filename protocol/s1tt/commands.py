"""The command table: every S1TT command declared once, with its request and reply layouts."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.s1tt.codes import Command
from protocol.s1tt.messages import (
    BankFirmware,
    BankFwuBegin,
    BankFwuData,
    BankInfoRequest,
    BankStatus,
    BatteryInfoRequest,
    ChargeRequest,
    Empty,
    FirmwareVersion,
    FwuBegin,
    FwuData,
    FwuDataAck,
    FwuHello,
    LedRequest,
    LinkStats,
    Message,
    PdoRequest,
    SlotRef,
    SlotsReply,
    StatsRequest,
    UnlockStats,
)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    command: Command
    request: type[Message]
    reply: type[Message]
    retry_safe: bool  # a repeat after a lost reply cannot act twice
    summary: str


def _spec(
    command: Command, request: type[Message], reply: type[Message], retry_safe: bool, summary: str
) -> CommandSpec:
    return CommandSpec(command, request, reply, retry_safe, summary)


COMMANDS: dict[Command, CommandSpec] = {
    spec.command: spec
    for spec in (
        _spec(Command.STATUS, SlotRef, BankStatus, True, "bank data of one slot"),
        _spec(Command.SET_CHARGE, ChargeRequest, Empty, True, "charging on or off"),
        _spec(Command.RESET, SlotRef, Empty, False, "reset the bank in a slot"),
        _spec(Command.SET_PDO, PdoRequest, Empty, True, "USB-PD charging profile"),
        _spec(Command.SLOTS, Empty, SlotsReply, True, "presence and lock bits"),
        # No token: a repeated UNLOCK after a lost reply opens the lock again.
        _spec(Command.UNLOCK, SlotRef, Empty, False, "open the lock of a slot"),
        _spec(Command.SET_LED, LedRequest, Empty, True, "slot LED on or off"),
        _spec(Command.SET_BANK_INFO, BankInfoRequest, Empty, True, "write bank identity"),
        _spec(Command.SET_BATTERY_INFO, BatteryInfoRequest, Empty, True, "write capacities"),
        _spec(Command.BANK_FIRMWARE, SlotRef, BankFirmware, True, "bank firmware version"),
        _spec(Command.BANK_ENTER_BOOT, SlotRef, Empty, False, "bank into its bootloader"),
        _spec(Command.BANK_FWU_HELLO, SlotRef, FwuHello, True, "bank bootloader handshake"),
        _spec(Command.BANK_FWU_BEGIN, BankFwuBegin, Empty, False, "bank update session"),
        _spec(Command.BANK_FWU_DATA, BankFwuData, FwuDataAck, True, "bank image chunk"),
        _spec(Command.BANK_FWU_END, SlotRef, Empty, False, "bank image check"),
        _spec(Command.BANK_FWU_ABORT, SlotRef, Empty, True, "drop bank update"),
        _spec(Command.BANK_FWU_EXIT, SlotRef, Empty, False, "bank back to its app"),
        _spec(Command.FIRMWARE_VERSION, Empty, FirmwareVersion, True, "board firmware"),
        _spec(Command.LINK_STATS, StatsRequest, LinkStats, False, "bank link counters"),
        _spec(Command.UNLOCK_STATS, StatsRequest, UnlockStats, False, "unlock counters"),
        _spec(Command.FWU_ENTER, Empty, Empty, False, "board into its bootloader"),
        _spec(Command.FWU_HELLO, Empty, FwuHello, True, "board bootloader handshake"),
        _spec(Command.FWU_BEGIN, FwuBegin, Empty, False, "board update session"),
        _spec(Command.FWU_DATA, FwuData, FwuDataAck, True, "board image chunk"),
        _spec(Command.FWU_END, Empty, Empty, False, "board image check"),
        _spec(Command.FWU_ABORT, Empty, Empty, True, "drop board update"),
        _spec(Command.FWU_EXIT, Empty, Empty, False, "board back to its app"),
    )
}


def command_spec(command_id: int) -> CommandSpec | None:
    """Return the table entry for a raw command id, or None when the id is unknown."""
    try:
        return COMMANDS[Command(command_id)]
    except ValueError:
        return None
