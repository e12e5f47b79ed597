"""Notices: what happened in the simulation, for users, scenarios, transports and the view."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.slotbus.messages import BoardEvent


class NoticeKind(StrEnum):
    EVENT = "event"  # a board event was latched, or dropped when `event` is None
    WINDOW_OPENED = "window_opened"
    WINDOW_CLOSED = "window_closed"
    BOOTED = "booted"
    PORT_DOWN = "port_down"  # the serial port disappeared
    PORT_UP = "port_up"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    board: int  # 0 for cabinet-wide notices
    slot: int  # the board's local slot, 0 for board-wide notices
    event: BoardEvent | None = None
