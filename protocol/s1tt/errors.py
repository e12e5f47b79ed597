"""Exceptions of the S1TT codec, and the classes that reply status codes map to."""

from __future__ import annotations

from typing import ClassVar

from protocol.s1tt.codes import Command, Status


class S1ttError(Exception):
    """Base of every error the S1TT codec raises."""


class FrameError(S1ttError):
    """Bytes that do not form a frame: start byte, length or CRC."""


class ChecksumError(FrameError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"CRC mismatch: expected 0x{expected:04X}, frame carries 0x{actual:04X}")
        self.expected = expected
        self.actual = actual


class PayloadError(S1ttError):
    """A frame whose payload does not match its command's layout."""


class UnknownCommandError(S1ttError):
    def __init__(self, command_id: int) -> None:
        super().__init__(f"unknown command id 0x{command_id:02X}")
        self.command_id = command_id


class BoardError(S1ttError):
    """A well-formed reply whose status is not OK."""

    status: ClassVar[Status] = Status.INTERNAL_ERROR

    def __init__(self, command: Command | int, address: int, raw_status: int) -> None:
        name = command.name if isinstance(command, Command) else f"0x{command:02X}"
        super().__init__(f"board {address} answered {name} with status {raw_status}")
        self.command = command
        self.address = address
        self.raw_status = raw_status


class BankTimeoutError(BoardError):
    status = Status.TIMEOUT


class BoardInvalidCommandError(BoardError):
    status = Status.INVALID_COMMAND


class InvalidArgumentsError(BoardError):
    status = Status.INVALID_ARGUMENTS


class InternalBoardError(BoardError):
    status = Status.INTERNAL_ERROR


_BOARD_ERRORS: dict[int, type[BoardError]] = {
    cls.status: cls
    for cls in (
        BankTimeoutError,
        BoardInvalidCommandError,
        InvalidArgumentsError,
        InternalBoardError,
    )
}


def board_error_for(status: int, command: Command | int, address: int) -> BoardError:
    """Return the exception for a status other than OK; an undefined status is INTERNAL_ERROR."""
    return _BOARD_ERRORS.get(status, InternalBoardError)(command, address, status)
