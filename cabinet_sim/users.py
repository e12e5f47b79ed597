"""Seeded random people at the cabinet: renters who take (or leave) ejected banks, returners
who push banks into free slots (sometimes badly), and the occasional vandal."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from cabinet_sim.bank import Bank, random_bank_id
from cabinet_sim.cabinet import Cabinet
from cabinet_sim.hardware import SimulationError
from cabinet_sim.notices import Notice, NoticeKind

logger = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600.0


class UserBehaviour(BaseModel):
    """Behaviour of people at the cabinet. Probabilities are in 0..1, rates per simulated hour."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    take_probability: float = Field(default=0.9, ge=0, le=1)
    """Chance that a renter takes the ejected bank; otherwise they never do."""
    take_delay_s: tuple[float, float] = (2.0, 20.0)
    """A renter takes the bank after a delay drawn uniformly from this range."""
    returns_per_hour: float = Field(default=0.0, ge=0)
    not_pushed_in: float = Field(default=0.03, ge=0, le=1)
    backwards: float = Field(default=0.01, ge=0, le=1)
    unreadable: float = Field(default=0.01, ge=0, le=1)
    return_charge_percent: tuple[float, float] = (5.0, 60.0)
    tampers_per_hour: float = Field(default=0.0, ge=0)


@dataclass(slots=True)
class UserStats:
    taken: int = 0
    left: int = 0  # ejected banks that no renter took
    returned: int = 0
    returned_badly: int = 0  # not pushed in, backwards or unreadable
    tampered: int = 0
    no_free_slot: int = 0


class Users:
    """Acts on `cabinet` through its timeline, so runs are reproducible under a seed.

    Taken banks go into a pocket, and returners bring those back first (else a bank from
    another cabinet).
    """

    def __init__(
        self, cabinet: Cabinet, behaviour: UserBehaviour, rng: random.Random | None = None
    ) -> None:
        self.cabinet = cabinet
        self.behaviour = behaviour
        self.rng = rng if rng is not None else random.Random(f"{cabinet.config.seed}:users")
        self.stats = UserStats()
        self.pocket: list[Bank] = []
        self._unsubscribe = cabinet.subscribe(self._on_notice)
        self._schedule_return()
        self._schedule_tamper()

    def stop(self) -> None:
        """Stop reacting to ejects; already scheduled arrivals still happen."""
        self._unsubscribe()

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is not NoticeKind.WINDOW_OPENED:
            return
        slot = self.cabinet.cabinet_slot(notice.board, notice.slot)
        window = self.cabinet.slot(slot).window
        if window is None or self.cabinet.slot(slot).bank is None:
            return
        if self.rng.random() >= self.behaviour.take_probability:
            self.stats.left += 1
            return
        low, high = self.behaviour.take_delay_s
        delay = self.rng.uniform(low, high)
        self.cabinet.timeline.schedule_in(delay, lambda: self._take(slot, window.token))

    def _take(self, slot: int, token: int) -> None:
        window = self.cabinet.slot(slot).window
        if window is None or window.token != token:
            self.stats.left += 1  # too late: the window has closed
            return
        self.pocket.append(self.cabinet.take(slot))
        self.stats.taken += 1

    def _schedule_return(self) -> None:
        rate = self.behaviour.returns_per_hour
        if rate > 0:
            delay = self.rng.expovariate(rate / SECONDS_PER_HOUR)
            self.cabinet.timeline.schedule_in(delay, self._return_bank)

    def _schedule_tamper(self) -> None:
        rate = self.behaviour.tampers_per_hour
        if rate > 0:
            delay = self.rng.expovariate(rate / SECONDS_PER_HOUR)
            self.cabinet.timeline.schedule_in(delay, self._tamper)

    def _return_bank(self) -> None:
        self._schedule_return()
        free = self.cabinet.free_slots()
        if not free:
            self.stats.no_free_slot += 1
            return
        slot = self.rng.choice(free)
        bank = self._bank_to_return()
        behaviour = self.behaviour
        seated = self.rng.random() >= behaviour.not_pushed_in
        backwards = self.rng.random() < behaviour.backwards
        readable = self.rng.random() >= behaviour.unreadable
        self.cabinet.insert_bank(slot, bank, seated=seated, backwards=backwards, readable=readable)
        self.stats.returned += 1
        if not (seated and readable) or backwards:
            self.stats.returned_badly += 1
        logger.debug("user returned a bank into slot %d", slot)

    def _bank_to_return(self) -> Bank:
        low, high = self.behaviour.return_charge_percent
        if self.pocket:
            bank = self.pocket.pop(self.rng.randrange(len(self.pocket)))
            bank.charge = self.rng.uniform(low, high)
            bank.temperature_c = self.cabinet.config.charging.ambient_c
            return bank
        return Bank(
            bank_id=random_bank_id(self.rng),
            capacity_mah=self.rng.choice(self.cabinet.config.banks.capacities_mah),
            charge=self.rng.uniform(low, high),
            temperature_c=self.cabinet.config.charging.ambient_c,
        )

    def _tamper(self) -> None:
        self._schedule_tamper()
        locked = [
            number
            for number in range(1, self.cabinet.slot_count + 1)
            if self.cabinet.slot(number).bank is not None
            and self.cabinet.slot(number).window is None
        ]
        if not locked:
            return
        slot = self.rng.choice(locked)
        try:
            bank = self.cabinet.tamper(slot)
        except SimulationError:
            return  # the latch was already open
        if bank is not None:
            self.pocket.append(bank)
        self.stats.tampered += 1
