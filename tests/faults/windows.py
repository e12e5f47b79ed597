"""Counting what the simulated cabinet physically did: take windows per unlock token, returns.

A return counts once its board latched the insertion event: a bank pulled out again within
the presence debounce time was never reported by the board, so no gateway can report it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cabinet_sim import NoticeKind
from cabinet_sim.cabinet import Cabinet
from cabinet_sim.notices import Notice
from protocol.slotbus.codes import EventKind


@dataclass
class WindowCounter:
    """Every take window the simulator opened, by unlock token; optionally takes each bank."""

    cabinet: Cabinet
    take: bool = False
    by_token: Counter[int] = field(default_factory=Counter)
    slots: list[int] = field(default_factory=list)
    returns: list[tuple[int, str | None]] = field(default_factory=list)
    dropped_events: int = 0
    _unsubscribe: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._unsubscribe = self.cabinet.subscribe(self._on_notice)

    @property
    def total(self) -> int:
        return sum(self.by_token.values())

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.EVENT:
            self._on_event(notice)
        if notice.kind is not NoticeKind.WINDOW_OPENED:
            return
        slot = self.cabinet.cabinet_slot(notice.board, notice.slot)
        window = self.cabinet.slot(slot).window
        self.by_token[window.token if window is not None else 0] += 1
        self.slots.append(slot)
        if self.take:
            asyncio.get_running_loop().call_soon(self._take, slot)

    def _on_event(self, notice: Notice) -> None:
        if notice.event is None:
            self.dropped_events += 1
        elif notice.event.kind is EventKind.BANK_INSERTED:
            slot = self.cabinet.cabinet_slot(notice.board, notice.event.slot)
            self.returns.append((slot, notice.event.bank_id.hex().upper()))

    def _take(self, slot: int) -> None:
        state = self.cabinet.slot(slot)
        if state.window is not None and state.bank is not None:
            self.cabinet.take(slot)
