"""Exceptions of the slot-bus codec, and the classes that board status codes map to."""

from __future__ import annotations

from typing import ClassVar

from protocol.slotbus.codes import Command, Status


class ProtocolError(Exception):
    """Base of every error the slot-bus codec raises."""


class FrameError(ProtocolError):
    """Bytes that do not form a valid frame (bad start, length, address or CRC)."""


class PayloadError(ProtocolError):
    """A frame whose payload does not match its command's layout."""


class UnknownCommandError(ProtocolError):
    """A frame with a command id that is not in the command table."""

    def __init__(self, command_id: int) -> None:
        super().__init__(f"unknown command id 0x{command_id:02X}")
        self.command_id = command_id


class BoardError(ProtocolError):
    """A well-formed response whose status is not OK."""

    status: ClassVar[Status] = Status.INTERNAL_ERROR

    def __init__(self, command: Command | int, address: int) -> None:
        name = command.name if isinstance(command, Command) else f"0x{command:02X}"
        super().__init__(f"board {address} answered {name} with {self.status.name}")
        self.command = command
        self.address = address


class BoardBusyError(BoardError):
    status = Status.BUSY


class BoardUnknownCommandError(BoardError):
    status = Status.UNKNOWN_COMMAND


class InvalidArgumentError(BoardError):
    status = Status.INVALID_ARGUMENT


class SlotFaultError(BoardError):
    status = Status.SLOT_FAULT


class InternalBoardError(BoardError):
    status = Status.INTERNAL_ERROR


class NoBankError(BoardError):
    status = Status.NO_BANK


BOARD_ERRORS: dict[Status, type[BoardError]] = {
    cls.status: cls
    for cls in (
        BoardBusyError,
        BoardUnknownCommandError,
        InvalidArgumentError,
        SlotFaultError,
        InternalBoardError,
        NoBankError,
    )
}


def board_error_for(status: int, command: Command | int, address: int) -> BoardError:
    """Return the exception for a non-OK status; an undefined status counts as INTERNAL_ERROR."""
    try:
        cls = BOARD_ERRORS[Status(status)]
    except (ValueError, KeyError):
        cls = InternalBoardError
    return cls(command, address)
