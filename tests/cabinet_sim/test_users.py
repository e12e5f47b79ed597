"""Seeded random users acting on the cabinet, on a manual clock."""

from __future__ import annotations

import functools
import random

from cabinet_sim import Cabinet, ManualClock
from cabinet_sim.users import UserBehaviour, Users
from protocol.slotbus import Command, EventKind, UnlockRequest
from tests.cabinet_sim.conftest import Master, empty_config


@functools.cache
def _day(seed: int) -> tuple[list[tuple[int, EventKind, int]], Users]:
    clock = ManualClock()
    cabinet = Cabinet(empty_config(seed=seed, physics_step_s=30.0), clock=clock)
    behaviour = UserBehaviour(
        returns_per_hour=6, not_pushed_in=0.2, backwards=0.1, unreadable=0.1, tampers_per_hour=0.5
    )
    users = Users(cabinet, behaviour)
    master = Master(cabinet)
    seen: list[tuple[int, EventKind, int]] = []
    token = 0
    for _ in range(6 * 60):  # six hours, a minute at a time
        cabinet.advance(60)
        for address in cabinet.boards:
            seen += [(address, e.kind, e.slot) for e in master.drain_events(address)]
        occupied = [n for n in range(1, 7) if cabinet.slot(n).bank is not None]
        if occupied and cabinet.slot(occupied[0]).window is None:
            token += 1
            master.call(1, Command.UNLOCK, UnlockRequest(occupied[0], 30, token))
    return seen, users


def test_users_are_deterministic() -> None:
    first, first_users = _day(11)
    second, second_users = _day.__wrapped__(11)
    assert first == second
    assert first_users.stats == second_users.stats
    other, _ = _day(12)
    assert other != first


def test_users_do_every_kind_of_thing() -> None:
    seen, users = _day(11)
    kinds = {kind for _, kind, _ in seen}
    assert EventKind.BANK_INSERTED in kinds
    assert EventKind.ID_READ_FAILED in kinds
    assert EventKind.UNLOCK_TAKEN in kinds
    assert EventKind.SLOT_OPENED in kinds
    assert users.stats.returned > 20
    assert users.stats.returned_badly > 0
    assert users.stats.taken > 0
    assert users.stats.tampered > 0


def test_renter_never_takes(clock: ManualClock, cabinet: Cabinet, master: Master) -> None:
    Users(cabinet, UserBehaviour(take_probability=0.0), random.Random(1))
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    master.drain_events(1)
    master.call(1, Command.UNLOCK, UnlockRequest(1, 10, 5))
    cabinet.advance(11)
    assert [e.kind for e in master.drain_events(1)] == [EventKind.UNLOCK_NOT_TAKEN]


def test_renter_takes_after_delay(clock: ManualClock, cabinet: Cabinet, master: Master) -> None:
    users = Users(cabinet, UserBehaviour(take_probability=1.0, take_delay_s=(4.0, 6.0)))
    cabinet.insert_bank(1)
    cabinet.advance(0.3)
    master.drain_events(1)
    master.call(1, Command.UNLOCK, UnlockRequest(1, 30, 6))
    cabinet.advance(3.9)
    assert master.drain_events(1) == []
    cabinet.advance(2.2)
    events = master.drain_events(1)
    assert [e.kind for e in events] == [EventKind.UNLOCK_TAKEN]
    assert 4000 <= events[0].uptime_ms - 300 <= 6100
    assert len(users.pocket) == 1
