"""A board's latched event queue and its cache of recent unlock tokens."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from protocol.slotbus.codes import EventKind, TokenState, UnlockCode
from protocol.slotbus.messages import NO_BANK_ID, BoardEvent

MAX_DROPPED = 0xFFFF
MIN_VALUE, MAX_VALUE = -0x8000, 0x7FFF  # the event value is a signed 16-bit field
UPTIME_WRAP_MS = 1 << 32


class EventQueue:
    """Unacknowledged events in id order, bounded by `capacity`.

    Ids start at 1 after each boot and grow by one per queued event. An event that finds the
    queue full is not queued, takes no id, and counts in `dropped` (saturating at 65535).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._events: deque[BoardEvent] = deque()
        self.last_id = 0
        self.dropped = 0

    def clear(self) -> None:
        """Forget everything, as a reboot does."""
        self._events.clear()
        self.last_id = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._events)

    def pending_kinds(self) -> list[EventKind]:
        return [event.kind for event in self._events]

    def push(
        self,
        kind: EventKind,
        *,
        slot: int = 0,
        uptime_ms: int = 0,
        token: int = 0,
        bank_id: bytes = NO_BANK_ID,
        value: int = 0,
    ) -> BoardEvent | None:
        """Queue an event and return it, or count it as dropped and return None."""
        if len(self._events) >= self.capacity:
            self.dropped = min(MAX_DROPPED, self.dropped + 1)
            return None
        self.last_id += 1
        event = BoardEvent(
            event_id=self.last_id,
            kind=kind,
            slot=slot,
            uptime_ms=uptime_ms % UPTIME_WRAP_MS,
            token=token,
            bank_id=bank_id,
            value=max(MIN_VALUE, min(MAX_VALUE, value)),
        )
        self._events.append(event)
        return event

    def oldest(self, count: int) -> tuple[BoardEvent, ...]:
        return tuple(event for _, event in zip(range(count), self._events, strict=False))

    def acknowledge(self, up_to: int) -> None:
        """Remove every event with an id up to and including `up_to`."""
        while self._events and self._events[0].event_id <= up_to:
            self._events.popleft()


@dataclass(slots=True)
class TokenRecord:
    """A board's record of one accepted unlock token."""

    slot: int
    result: UnlockCode
    state: TokenState
    bank_id: bytes


class TokenCache:
    """The most recent accepted unlock tokens, oldest pushed out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._records: OrderedDict[int, TokenRecord] = OrderedDict()

    def clear(self) -> None:
        self._records.clear()

    def get(self, token: int) -> TokenRecord | None:
        return self._records.get(token)

    def add(self, token: int, record: TokenRecord) -> None:
        self._records[token] = record
        self._records.move_to_end(token)
        while len(self._records) > self.size:
            self._records.popitem(last=False)

    def __len__(self) -> int:
        return len(self._records)
