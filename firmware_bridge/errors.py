"""Exceptions of the firmware bridge."""

from __future__ import annotations

from protocol.slotbus import BoardError, Command


class BridgeError(Exception):
    """Base of every error the bridge raises."""


class PortError(BridgeError):
    """The serial port cannot be opened or was lost."""


class PortBusyError(PortError):
    """Another process holds the port's exclusive lock."""


class PortLostError(PortError):
    """The port went away while open (unplugged, simulator stopped, read error)."""


class NotConnectedError(BridgeError):
    """A request was made while the port is closed."""


class RequestTimeoutError(BridgeError):
    """A board did not answer a request within its reply timeout, after every retry."""

    def __init__(self, address: int, command: Command, attempts: int) -> None:
        super().__init__(
            f"board {address} did not answer {command.name} after {attempts} attempt(s)"
        )
        self.address = address
        self.command = command
        self.attempts = attempts


class BoardRejectedError(BridgeError):
    """A board answered with a status other than OK; `error` is the codec's exception."""

    def __init__(self, error: BoardError) -> None:
        super().__init__(str(error))
        self.error = error


class UnknownSlotError(BridgeError, ValueError):
    """A global slot number outside 1..slot_count."""


class BoardOfflineError(BridgeError):
    """The board of the slot is offline, so the command was not sent."""


class SinkError(BridgeError):
    """The sink could not take an event; the board event stays unacknowledged for a retry."""


class ChargingRefusedError(BridgeError):
    """Charging was not switched on because the bank is too hot or faulted."""
