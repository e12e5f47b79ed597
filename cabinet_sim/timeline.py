"""Simulation time: timers that fire at exact instants, and physics stepped in between."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class _Timer:
    at: float
    order: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class TimerHandle:
    def __init__(self, timer: _Timer) -> None:
        self._timer = timer

    @property
    def at(self) -> float:
        return self._timer.at

    def cancel(self) -> None:
        self._timer.cancelled = True


class Timeline:
    """Runs timers in time order and integrates physics between them.

    `run_until(t)` steps physics in slices of at most `max_step_s`, stopping exactly at each
    timer, so a take window ends at its instant however coarse the physics step is. Timers
    scheduled at equal times fire in the order they were scheduled.

    Physics may lag behind `now` (see `run_until`), but never behind a timer: it is integrated
    up to each timer's instant before the timer runs.
    """

    def __init__(self, start: float, physics: Callable[[float], None], max_step_s: float) -> None:
        self.now = start
        self.physics_time = start
        """Physics is integrated up to this instant, which is never after `now`."""
        self._physics = physics
        self._max_step_s = max_step_s
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._running = False

    def schedule(self, at: float, action: Callable[[], None]) -> TimerHandle:
        timer = _Timer(max(at, self.now), next(self._order), action)
        heapq.heappush(self._timers, timer)
        return TimerHandle(timer)

    def schedule_in(self, delay_s: float, action: Callable[[], None]) -> TimerHandle:
        return self.schedule(self.now + delay_s, action)

    def run_until(self, until: float, *, max_physics_lag_s: float = 0.0) -> None:
        """Run everything due up to `until`. A call from inside a timer returns at once.

        With `max_physics_lag_s` above 0, physics after the last timer is integrated only when
        it lags `until` by at least that much, so that frequent calls stay cheap. Timers still
        fire at their instants, and `now` still reaches `until`.
        """
        if self._running:
            return
        self._running = True
        try:
            self._run_until(until, max_physics_lag_s)
        finally:
            self._running = False

    def _run_until(self, until: float, max_physics_lag_s: float) -> None:
        while True:
            self._drop_cancelled()
            next_at = self._timers[0].at if self._timers else None
            if next_at is None or next_at > until:
                if until - self.physics_time >= max_physics_lag_s:
                    self._integrate_to(until)
                self.now = max(self.now, until)
                return
            self._integrate_to(next_at)
            timer = heapq.heappop(self._timers)
            timer.action()

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)

    def _integrate_to(self, until: float) -> None:
        while self.physics_time < until:
            target = min(self.physics_time + self._max_step_s, until)
            # During a step `now` is the step's start. When physics catches up a lag, `now`
            # stays where it is, because time never goes back.
            self.now = max(self.now, self.physics_time)
            self._physics(target - self.physics_time)
            self.physics_time = target
        self.now = max(self.now, until)
