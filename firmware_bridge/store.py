"""State the bridge keeps across restarts, stored by the caller through a small interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EventWatermark:
    """The last board event handed on, per board serial."""

    board_id: int
    boot_count: int
    event_id: int


class BridgeStore(Protocol):
    """Persistence the caller provides; the bridge never writes files itself.

    Methods are synchronous and called from the event loop, so they must be quick
    (a local SQLite write is fine).
    """

    def load_disabled_slots(self) -> dict[int, str]:
        """Return disabled global slot numbers with their reasons."""
        ...

    def save_disabled_slot(self, slot: int, reason: str | None) -> None:
        """Store a slot as disabled with `reason`, or as enabled when `reason` is None."""
        ...

    def load_event_watermarks(self) -> dict[int, EventWatermark]:
        """Return the watermarks keyed by board_id."""
        ...

    def save_event_watermark(self, watermark: EventWatermark) -> None: ...

    def load_occupancy(self) -> dict[int, tuple[bool, str | None]]:
        """Return, per global slot, whether a bank was present and its id, as last saved.

        The bridge compares this with the first GET_SLOTS of a board that rebooted while the
        gateway was stopped: its event queue was lost, so returns made meanwhile are found
        only by that comparison.
        """
        ...


class MemoryStore:
    """A BridgeStore that keeps everything in memory, for tests and dry runs."""

    def __init__(self) -> None:
        self.disabled: dict[int, str] = {}
        self.watermarks: dict[int, EventWatermark] = {}
        self.occupancy: dict[int, tuple[bool, str | None]] = {}

    def load_disabled_slots(self) -> dict[int, str]:
        return dict(self.disabled)

    def save_disabled_slot(self, slot: int, reason: str | None) -> None:
        if reason is None:
            self.disabled.pop(slot, None)
        else:
            self.disabled[slot] = reason

    def load_event_watermarks(self) -> dict[int, EventWatermark]:
        return dict(self.watermarks)

    def save_event_watermark(self, watermark: EventWatermark) -> None:
        self.watermarks[watermark.board_id] = watermark

    def load_occupancy(self) -> dict[int, tuple[bool, str | None]]:
        return dict(self.occupancy)
