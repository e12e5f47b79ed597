"""Configuration of a simulated cabinet, and the map from cabinet slot numbers to boards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.gzxj.constants import HOST_SILENCE_RESET_S, REPORT_INTERVAL_S
from protocol.s1tt.constants import SLOTS_PER_BOARD as S1TT_SLOTS_PER_BOARD
from protocol.slotbus.constants import (
    BAUD_RATE,
    BOARD_TURNAROUND_S,
    MAX_ADDRESS,
    MAX_SLOTS_PER_BOARD,
    MIN_ADDRESS,
    MIN_EVENT_QUEUE,
    PROTOCOL_VERSION,
    TOKEN_CACHE_SIZE,
)

MAX_CABINET_SLOTS = 48
DEFAULT_TURNAROUND_S = 0.001
"""Default of `SimConfig.turnaround_s`."""
S1TT_MAX_ADDRESS = 0xFF

WireProtocol = Literal["native", "gzxj", "s1tt"]


@dataclass(frozen=True, slots=True)
class SlotAddress:
    """Bus location of a cabinet slot: board address and the board's local slot."""

    board: int
    slot: int


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChargingConfig(_Model):
    """Charger and battery physics. Defaults describe a 1S Li-ion bank on a 10 W charger."""

    max_per_board: int = Field(default=2, ge=1, le=MAX_SLOTS_PER_BOARD)
    """Banks one board charges at once; the others wait (Identity.max_charging)."""
    constant_current_ma: int = Field(default=2000, gt=0, le=20_000)
    cv_start_percent: float = Field(default=80.0, gt=0, lt=100)
    """Charge at which the charger moves from constant current to constant voltage."""
    min_current_ma: int = Field(default=100, gt=0)
    """Taper current below which a constant-voltage charge counts as full."""
    recharge_below_percent: float = Field(default=95.0, gt=0, le=100)
    """A full bank starts charging again when its charge falls below this."""
    ambient_c: float = 25.0
    heating_c_at_full_current: float = Field(default=12.0, ge=0)
    """Temperature rise above ambient, in steady state, while charging at full current."""
    thermal_time_constant_s: float = Field(default=600.0, gt=0)
    self_discharge_percent_per_day: float = Field(default=0.1, ge=0)
    overheat_c: float = 60.0
    overheat_clear_c: float = 45.0


class BankMix(_Model):
    """The banks a cabinet holds when the simulation starts."""

    fill_ratio: float = Field(default=0.7, ge=0, le=1)
    """Share of slots that hold a bank at start."""
    rentable_share: float = Field(default=0.6, ge=0, le=1)
    """Share of those banks charged at or above `rentable_percent`."""
    rentable_percent: int = Field(default=80, ge=0, le=100)
    capacities_mah: tuple[int, ...] = (5000, 10000)
    max_cycles: int = Field(default=500, ge=0)


class FaultRates(_Model):
    """Random faults. Every rate is a probability in 0..1; zero turns the fault off."""

    corrupt_byte_rate: float = Field(default=0.0, ge=0, le=1)
    """Chance that one byte on the line, in either direction, has one bit flipped."""
    drop_response_rate: float = Field(default=0.0, ge=0, le=1)
    """Chance that a board acts on a request but its response is lost."""
    late_response_rate: float = Field(default=0.0, ge=0, le=1)
    late_response_delay_s: float = Field(default=0.2, ge=0)
    lock_stuck_rate: float = Field(default=0.0, ge=0, le=1)
    """Chance per unlock that the lock does not open."""
    lock_not_returned_rate: float = Field(default=0.0, ge=0, le=1)
    """Chance per take window that the solenoid does not return afterwards."""
    local_echo: bool = False
    """Echo the master's bytes back to it, as RS-485 adapters without echo suppression do."""


class GzxjConfig(_Model):
    """The GZXJ station board. Values the published protocol leaves open are our choices."""

    address: str = Field(default="0", pattern=r"^[0-9A-Za-z]{1,3}$")
    device_id: str = Field(default="GZSIM0001", pattern=r"^[0-9A-Za-z._\-]{1,32}$")
    firmware: str = Field(default="sim-1.0", pattern=r"^[0-9A-Za-z._\-]{1,32}$")
    min_charge: int = Field(default=80, ge=0, le=100)
    """Minimum rentable charge in percent until the host sets another with CM."""
    lock_fault_blocks: bool = True
    cable_fault_blocks: bool = True
    take_window_s: int = Field(default=30, ge=1)
    """How long an opened slot stays open for the renter before the lock returns."""
    rent_timeout_s: float = Field(default=5.0, ge=0)
    """Delay of a rent reply with result TIMEOUT: the station waited this long on the slot."""
    report_interval_s: float = Field(default=REPORT_INTERVAL_S, gt=0)
    return_repeat_s: float = Field(default=10.0, gt=0)
    """Interval at which an unconfirmed RS return report is sent again."""
    host_silence_reset_s: float = Field(default=HOST_SILENCE_RESET_S, gt=0)
    order_cache_size: int = Field(default=64, ge=1)
    """Order ids whose reply the station keeps for repeated requests."""


class S1ttConfig(_Model):
    """The S1TT slot boards."""

    firmware_version: str = Field(default="sim-1.0.0", min_length=1, max_length=60)
    latch_open_s: int = Field(default=30, ge=1)
    """How long the latch stays open after an UNLOCK before it returns."""


class SimConfig(_Model):
    """Everything that shapes one simulated cabinet. Equal configs give equal runs."""

    boards: int | tuple[int, ...] = 4
    """Number of boards (addresses 1..N; 0..N-1 for S1TT), or the addresses in bus order."""
    slots_per_board: int = Field(default=6, ge=1, le=MAX_SLOTS_PER_BOARD)
    seed: int = 0
    event_capacity: int = Field(default=MIN_EVENT_QUEUE, ge=MIN_EVENT_QUEUE, le=255)
    token_cache_size: int = Field(default=TOKEN_CACHE_SIZE, ge=TOKEN_CACHE_SIZE)
    charging: ChargingConfig = ChargingConfig()
    banks: BankMix = BankMix()
    faults: FaultRates = FaultRates()
    baud_rate: int = Field(default=BAUD_RATE, gt=0)
    pacing: bool = True
    """Send bytes at the baud rate (10 bits per byte) instead of all at once."""
    turnaround_s: float = DEFAULT_TURNAROUND_S
    """Delay between a request's last byte and the response's first byte; 0 is an ideal board.

    At most BOARD_TURNAROUND_S, the limit of the specification. UNLOCK and LOCK add
    `lock_confirm_s`.
    """
    stale_status_after_eject: bool = True
    """Show the pre-eject presence in GET_SLOTS until the sensors have settled."""
    lock_confirm_s: float = Field(default=0.0, ge=0, le=0.3)
    """Extra delay of UNLOCK and LOCK responses while the board waits for the position sensor.

    The specification lets a board take up to 300 ms here; 0 answers within the turnaround.
    """
    physics_step_s: float = Field(default=1.0, gt=0, le=60)
    firmware_version: tuple[int, int, int] = (1, 0, 0)
    hardware_revision: int = Field(default=1, ge=0, le=255)
    protocol: WireProtocol = "native"
    """Wire protocol on the serial line: slot-bus, a GZXJ station, or S1TT slot boards."""
    slotbus_version: int = Field(default=PROTOCOL_VERSION, ge=1, le=PROTOCOL_VERSION)
    """Slot-bus version of the native boards, so that a master's fallbacks can be tested.
    Version 2 boards reject GET_SLOT_RANGE and ACK_AND_READ_EVENTS with UNKNOWN_COMMAND and
    report neither SLOT_RANGE nor ACK_ON_READ; version 1 boards also reject GET_BANKS and do
    not report BANK_BATCH."""
    gzxj: GzxjConfig = GzxjConfig()
    s1tt: S1ttConfig = S1ttConfig()

    @field_validator("turnaround_s")
    @classmethod
    def _check_turnaround(cls, value: float) -> float:
        if not 0 <= value <= BOARD_TURNAROUND_S:
            raise ValueError(
                f"turnaround_s {value} is outside 0..{BOARD_TURNAROUND_S} s, the time within "
                "which a slot-bus board must start its response after a request's last byte"
            )
        return value

    @model_validator(mode="after")
    def _check_layout(self) -> Self:
        addresses = self.board_addresses()
        if not addresses:
            raise ValueError("a cabinet needs at least one board")
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"board addresses {list(addresses)} contain duplicates")
        lowest, highest = (
            (0, S1TT_MAX_ADDRESS) if self.protocol == "s1tt" else (MIN_ADDRESS, MAX_ADDRESS)
        )
        for address in addresses:
            if not lowest <= address <= highest:
                raise ValueError(f"board address {address} is outside {lowest}..{highest}")
        if self.protocol == "s1tt" and self.slots_per_board > S1TT_SLOTS_PER_BOARD:
            raise ValueError(
                f"S1TT boards have at most {S1TT_SLOTS_PER_BOARD} slots, not {self.slots_per_board}"
            )
        total = len(addresses) * self.slots_per_board
        if total > MAX_CABINET_SLOTS:
            raise ValueError(
                f"{len(addresses)} boards x {self.slots_per_board} slots = {total} slots, "
                f"more than the {MAX_CABINET_SLOTS} a cabinet can have"
            )
        if self.charging.max_per_board > self.slots_per_board:
            raise ValueError(
                f"charging.max_per_board {self.charging.max_per_board} exceeds "
                f"slots_per_board {self.slots_per_board}"
            )
        return self

    def board_addresses(self) -> tuple[int, ...]:
        """Return the board addresses in bus order; S1TT boards count from 0, others from 1."""
        if isinstance(self.boards, int):
            first = 0 if self.protocol == "s1tt" else 1
            return tuple(range(first, first + self.boards))
        return tuple(self.boards)

    def slot_map(self) -> tuple[SlotAddress, ...]:
        """Return the bus location of cabinet slots 1..N; index 0 is slot 1."""
        return tuple(
            SlotAddress(board, local)
            for board in self.board_addresses()
            for local in range(1, self.slots_per_board + 1)
        )

    @property
    def slot_count(self) -> int:
        return len(self.board_addresses()) * self.slots_per_board
