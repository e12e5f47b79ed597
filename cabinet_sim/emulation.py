"""The wire protocol a cabinet speaks: the interface, and the native slot-bus boards.

An emulation turns the master's bytes into replies. The cabinet around it applies the line
faults (corruption, lost and late replies, echo, port loss) the same way for every protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cabinet_sim.hardware import SimulationError
from protocol.slotbus.codes import BootReason, Command
from protocol.slotbus.frame import Deframer

if TYPE_CHECKING:
    from cabinet_sim.cabinet import Cabinet

logger = logging.getLogger(__name__)

LOCK_COMMANDS = frozenset({Command.UNLOCK, Command.LOCK})


@dataclass(frozen=True, slots=True)
class Reply:
    """One frame a board sends back; `extra_delay_s` comes on top of the turnaround."""

    data: bytes
    extra_delay_s: float = 0.0
    label: str = ""  # for logs: which board and request the reply belongs to


class Emulation(Protocol):
    def handle(self, data: bytes) -> list[Reply]:
        """Feed bytes from the master; return the replies to every complete request."""
        ...

    def reset_input(self) -> None:
        """Drop a partial request, as when the port goes away."""
        ...

    def set_silent(self, address: int | str, silent: bool) -> None:
        """Make the board at `address` stop reading and responding to the line, or resume."""
        ...

    def restart(self, address: int | str, reason: BootReason) -> None:
        """Power-cycle the board at `address`."""
        ...


class NativeEmulation:
    """Slot-bus boards: each physical board responds to frames addressed to it."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self._deframer = Deframer()

    def handle(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        for frame in self._deframer.feed(data):
            board = self.cabinet.boards.get(frame.address)
            response = board.handle_frame(frame) if board is not None else None
            if response is None:
                continue
            extra = self.cabinet.config.lock_confirm_s if frame.command_id in LOCK_COMMANDS else 0
            label = f"board {frame.address} sequence {frame.sequence}"
            replies.append(Reply(response, extra, label))
        return replies

    def reset_input(self) -> None:
        self._deframer.reset()

    def set_silent(self, address: int | str, silent: bool) -> None:
        self.cabinet.board(board_address(address)).silent = silent

    def restart(self, address: int | str, reason: BootReason) -> None:
        self.cabinet.board(board_address(address)).boot(reason)


def board_address(address: int | str) -> int:
    """Return a numeric board address; raise SimulationError for text that is not a number."""
    try:
        return int(address)
    except ValueError:
        raise SimulationError(f"board address {address!r} is not a number") from None
