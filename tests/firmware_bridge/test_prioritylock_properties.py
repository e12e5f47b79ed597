"""`PriorityLock` under random acquire, release, reserve, withdraw and cancel sequences."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.prioritylock import PriorityLock, Reservation

PRIORITIES = st.integers(min_value=0, max_value=2)

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), PRIORITIES),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("reserve"), PRIORITIES),
        st.tuples(st.just("withdraw"), st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("settle"), st.just(0)),
    ),
    max_size=40,
)


@dataclass
class Waiter:
    priority: int
    task: asyncio.Task[None]
    holding: bool = False
    released: bool = False


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def check_invariants(
    lock: PriorityLock, waiters: list[Waiter], reservations: list[Reservation]
) -> None:
    holders = [w for w in waiters if w.holding and not w.released]
    assert len(holders) <= 1, "two tasks hold the lock at once"
    assert lock.locked == bool(holders)
    if lock.locked:
        return
    live = [reservation for reservation in reservations if reservation in lock._reservations]
    best_reserved = min((r.priority for r in live), default=None)
    for waiter in waiters:
        if waiter.task.done():
            continue
        eligible = best_reserved is None or waiter.priority <= best_reserved
        assert not eligible, f"lock free while a priority-{waiter.priority} waiter is eligible"


async def run_operations(operations: list[tuple[str, int]]) -> None:
    lock = PriorityLock()
    waiters: list[Waiter] = []
    reservations: list[Reservation] = []

    async def take(waiter_priority: int, record: list[Waiter]) -> None:
        await lock.acquire(waiter_priority)
        record[0].holding = True

    for name, argument in operations:
        if name == "acquire":
            record: list[Waiter] = []
            task = asyncio.create_task(take(argument, record))
            waiter = Waiter(argument, task)
            record.append(waiter)
            waiters.append(waiter)
        elif name == "release":
            await settle()
            holders = [w for w in waiters if w.holding and not w.released]
            if holders:
                holders[0].released = True
                lock.release()
        elif name == "reserve":
            reservations.append(lock.reserve(argument))
        elif name == "withdraw" and reservations:
            lock.withdraw(reservations[argument % len(reservations)])
        elif name == "cancel" and waiters:
            waiters[argument % len(waiters)].task.cancel()
        await settle()
        check_invariants(lock, waiters, reservations)

    # Every waiter left gets the lock once the reservations end and each holder lets go.
    for reservation in reservations:
        lock.withdraw(reservation)
    async with asyncio.timeout(5.0):
        while True:
            await settle()
            check_invariants(lock, waiters, reservations)
            holders = [w for w in waiters if w.holding and not w.released]
            if holders:
                holders[0].released = True
                lock.release()
                continue
            if all(w.task.done() for w in waiters):
                break
    assert not lock.locked
    assert lock.reserved == 0
    for waiter in waiters:
        if not waiter.task.cancelled():
            assert waiter.holding, f"priority-{waiter.priority} waiter never got the lock"


@given(OPERATIONS)
def test_lock_invariants_random_sequences(operations: list[tuple[str, int]]) -> None:
    asyncio.run(run_operations(operations))
