"""Stateful property test: random inserts, removals, ejects, lock faults and reboots.

Invariants after every step: each physical insert produced exactly one BankReturned, and each
eject produced exactly one outcome, consistent with what physically happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cabinet_sim import Cabinet, InjectedFault, MonotonicClock
from firmware_bridge import BankReturned, EjectFinished, EjectResult
from protocol.cabinet import EjectFailReason, EjectOutcome, LinkState, SlotState
from protocol.slotbus import LockState
from tests.firmware_bridge.conftest import Rig, memory_rig, sim_config

T = TypeVar("T")

SLOTS = 8
SIM_SPEED = 20.0
"""The simulated cabinet runs this much faster than real time, so take windows end quickly."""


class CabinetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.cabinet = Cabinet(sim_config(), clock=MonotonicClock(SIM_SPEED))
        self.rig: Rig = self.run(self.stack.enter_async_context(memory_rig(cabinet=self.cabinet)))
        self.inserts: Counter[int] = Counter()
        self.tokens: list[int] = []
        self.results: dict[int, EjectResult] = {}

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        self.run(self.stack.aclose())
        self.loop.close()

    def returns(self) -> Counter[int]:
        return Counter(event.slot for event in self.rig.sink.of(BankReturned))

    def sim_slot_free(self, slot: int) -> bool:
        state = self.cabinet.slot(slot)
        return state.bank is None and state.window is None and state.lock is LockState.LOCKED

    @rule(slot=st.integers(1, SLOTS), readable=st.booleans(), charge=st.sampled_from([30.0, 95.0]))
    def insert(self, slot: int, readable: bool, charge: float) -> None:
        if not self.sim_slot_free(slot):
            return
        self.cabinet.insert_bank(slot, charge=charge, readable=readable)
        self.inserts[slot] += 1
        self.run(self.rig.sink.wait_until(lambda: self.returns()[slot] >= self.inserts[slot]))

    @rule(slot=st.one_of(st.none(), st.integers(1, SLOTS)), take=st.booleans())
    def eject(self, slot: int | None, take: bool) -> None:
        token = len(self.tokens) + 1
        self.tokens.append(token)
        self.results[token] = self.run(self._eject(slot, token, take))

    async def _eject(self, slot: int | None, token: int, take: bool) -> EjectResult:
        bridge = self.rig.bridge
        task = asyncio.create_task(bridge.eject(slot, token, window_s=5 if take else 1))

        def opened() -> int | None:
            for state in bridge.snapshot().slots:
                if state.state is SlotState.AWAITING_TAKE:
                    return state.slot
            return None

        if take:
            await self.rig.sink.wait_until(lambda: task.done() or opened() is not None)
            number = opened()
            if not task.done() and number is not None:
                self.cabinet.take(number)
        result = await task
        if result.outcome is EjectOutcome.TAKEN:
            assert take
            assert result.slot is not None
            assert self.cabinet.slot(result.slot).bank is None
        if result.outcome is EjectOutcome.NOT_TAKEN:
            assert result.slot is not None
            assert self.cabinet.slot(result.slot).bank is not None
        return result

    @precondition(lambda self: any(self.cabinet.slot(n).bank for n in range(1, SLOTS + 1)))
    @rule(data=st.data())
    def eject_stuck_lock(self, data: st.DataObject) -> None:
        occupied = [n for n in range(1, SLOTS + 1) if self.cabinet.slot(n).bank is not None]
        slot = data.draw(st.sampled_from(occupied))
        token = len(self.tokens) + 1
        self.tokens.append(token)
        self.cabinet.set_fault(slot, InjectedFault.LOCK_STUCK)
        try:
            result = self.run(self.rig.bridge.eject(slot, token, window_s=1, maintenance=True))
        finally:
            self.cabinet.set_fault(slot, InjectedFault.LOCK_STUCK, active=False)
        self.results[token] = result
        assert result.outcome is EjectOutcome.FAILED
        assert result.fail_reason is EjectFailReason.LOCK_FAULT

    @rule(board=st.sampled_from([1, 2]))
    def reboot(self, board: int) -> None:
        self.cabinet.power_cycle(board)
        bridge = self.rig.bridge

        def back() -> bool:
            identity = bridge.snapshot().boards[board - 1].identity
            link = bridge.snapshot().boards[board - 1].link
            booted = identity is not None and identity.boot_count >= 2
            return booted and link is LinkState.ONLINE

        self.run(self.rig.sink.wait_until(back))

    @invariant()
    def every_insert_returned_once(self) -> None:
        assert self.returns() == +self.inserts

    @invariant()
    def every_eject_one_outcome(self) -> None:
        finished = Counter(event.result.token for event in self.rig.sink.of(EjectFinished))
        assert finished == Counter(self.tokens)
        for event in self.rig.sink.of(EjectFinished):
            assert event.result == self.results.get(event.result.token, event.result)


CabinetMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cabinet_model = CabinetMachine.TestCase
