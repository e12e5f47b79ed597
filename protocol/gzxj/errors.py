"""Exceptions of the GZXJ codec."""

from __future__ import annotations


class GzxjError(Exception):
    """Base of every error the GZXJ codec raises."""


class FrameError(GzxjError):
    """Text that does not form a frame: braces, address, separators, length or CRC."""


class ChecksumError(FrameError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"CRC mismatch: expected {expected:04x}, frame carries {actual:04x}")
        self.expected = expected
        self.actual = actual


class PayloadError(GzxjError):
    """Fields that do not match their command's layout."""


class UnknownCommandError(GzxjError):
    def __init__(self, command: str) -> None:
        super().__init__(f"unknown command {command!r}")
        self.command = command
