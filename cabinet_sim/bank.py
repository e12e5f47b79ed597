"""A power bank: identity, battery state, and the physics of charging, resting and wear."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from cabinet_sim.config import ChargingConfig
from protocol.slotbus.constants import BANK_ID_SIZE

EMPTY_VOLTAGE_MV = 3300
FULL_VOLTAGE_MV = 4200
INTERNAL_RESISTANCE_MOHM = 80
SECONDS_PER_DAY = 86_400.0
MIN_HEALTH_PERCENT = 50.0
WEAR_PERCENT_PER_CYCLE = 0.02
"""State of health lost per full charge cycle: 80 % after 1000 cycles."""


@dataclass(slots=True)
class Bank:
    """One bank. Mutable: the simulation changes charge, temperature and wear in place."""

    bank_id: bytes
    capacity_mah: int
    charge: float  # percent, 0..100
    temperature_c: float = 25.0
    cycles: int = 0
    readable: bool = True
    """False when the id chip does not respond, so the board reads no id and no data."""
    extra_heating_c: float = 0.0
    """Additional temperature rise while charging, to model a bank that runs hot."""
    current_ma: float = 0.0
    _charged_mah: float = 0.0  # towards the next full cycle

    def __post_init__(self) -> None:
        if len(self.bank_id) != BANK_ID_SIZE:
            raise ValueError(f"bank id must be {BANK_ID_SIZE} bytes, not {len(self.bank_id)}")
        if not 0 <= self.charge <= 100:
            raise ValueError(f"charge {self.charge} is outside 0..100 %")

    @property
    def health(self) -> float:
        """State of health in percent, falling linearly with cycles."""
        return max(MIN_HEALTH_PERCENT, 100.0 - self.cycles * WEAR_PERCENT_PER_CYCLE)

    @property
    def voltage_mv(self) -> int:
        """Open-circuit voltage from a linear model, plus the drop over the internal resistance."""
        ocv = EMPTY_VOLTAGE_MV + (FULL_VOLTAGE_MV - EMPTY_VOLTAGE_MV) * self.charge / 100
        return round(ocv + self.current_ma * INTERNAL_RESISTANCE_MOHM / 1000)

    @property
    def charge_percent(self) -> int:
        return int(self.charge)

    def advance(self, seconds: float, current_ma: float, physics: ChargingConfig) -> None:
        """Move the bank `seconds` forward with `current_ma` flowing in (0 at rest)."""
        self.current_ma = current_ma
        usable_mah = self.capacity_mah * self.health / 100
        gained_mah = current_ma * seconds / 3600
        lost_percent = physics.self_discharge_percent_per_day * seconds / SECONDS_PER_DAY
        self.charge = min(
            100.0, max(0.0, self.charge + gained_mah / usable_mah * 100 - lost_percent)
        )
        self._add_wear(gained_mah)
        self._advance_temperature(seconds, current_ma, physics)

    def _add_wear(self, gained_mah: float) -> None:
        self._charged_mah += gained_mah
        while self._charged_mah >= self.capacity_mah:
            self._charged_mah -= self.capacity_mah
            self.cycles += 1

    def _advance_temperature(
        self, seconds: float, current_ma: float, physics: ChargingConfig
    ) -> None:
        load = current_ma / physics.constant_current_ma
        target = physics.ambient_c
        if current_ma > 0:
            target += physics.heating_c_at_full_current * load + self.extra_heating_c
        # First-order lag towards the target; exact for a constant target over the step.
        fraction = 1 - math.exp(-seconds / physics.thermal_time_constant_s)
        self.temperature_c += (target - self.temperature_c) * fraction


def charging_current_ma(charge: float, physics: ChargingConfig) -> float:
    """Return the CC/CV charging current for a bank at `charge` percent.

    Constant current up to `cv_start_percent`, then a linear taper to zero at 100 %.
    """
    if charge < physics.cv_start_percent:
        return float(physics.constant_current_ma)
    remaining = (100 - charge) / (100 - physics.cv_start_percent)
    return max(0.0, physics.constant_current_ma * remaining)


def random_bank_id(rng: random.Random) -> bytes:
    """Return a random 4-byte serial, zero-padded to the wire size, never all zero."""
    serial = rng.randrange(1, 1 << 32)
    return serial.to_bytes(BANK_ID_SIZE, "big")


def random_bank(
    rng: random.Random, capacities_mah: tuple[int, ...], charge: float, max_cycles: int
) -> Bank:
    return Bank(
        bank_id=random_bank_id(rng),
        capacity_mah=rng.choice(capacities_mah),
        charge=charge,
        cycles=rng.randint(0, max_cycles),
    )
