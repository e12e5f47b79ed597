"""The simulated cabinet: boards on one bus, the line between them and the master, and time."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from cabinet_sim.bank import Bank, random_bank, random_bank_id
from cabinet_sim.board import Board
from cabinet_sim.clock import Clock, ManualClock
from cabinet_sim.config import DEFAULT_TURNAROUND_S, SimConfig, SlotAddress
from cabinet_sim.emulation import Emulation, NativeEmulation
from cabinet_sim.gzxj_station import GzxjStation
from cabinet_sim.hardware import SimulationError
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.s1tt_boards import S1ttBoards
from cabinet_sim.slot import InjectedFault, Slot
from cabinet_sim.timeline import Timeline, TimerHandle
from protocol.slotbus.codes import BootReason

logger = logging.getLogger(__name__)

TURNAROUND_S = DEFAULT_TURNAROUND_S
"""Turnaround of a cabinet with the default config; `SimConfig.turnaround_s` sets another."""
RECEIVE_PHYSICS_LAG_S = 0.05
"""Simulation time that physics may lag behind the clock when bytes arrive.

Integrating every bank on every received chunk took 0.6 to 0.8 ms for an 8 x 6 cabinet on a
shared 2-core development machine. So a received chunk integrates only the board that handles
a request in it. The other boards catch up once they lag by this much, and before every timer
and every physical action.
"""

Listener = Callable[[Notice], None]


@dataclass(frozen=True, slots=True)
class Transmission:
    """Bytes the cabinet sends to the master, `delay_s` after the request that caused them."""

    delay_s: float
    data: bytes
    echo: bool = False  # the master's own bytes, echoed by the line


@dataclass(slots=True)
class LinkFaults:
    """Line faults, switchable while the simulation runs. Rates are probabilities in 0..1."""

    corrupt_byte_rate: float = 0.0
    drop_response_rate: float = 0.0
    late_response_rate: float = 0.0
    late_response_delay_s: float = 0.2
    local_echo: bool = False


TransmitListener = Callable[["Transmission"], None]


class Cabinet:
    """A whole cabinet on the serial side, driven by `clock`.

    Cabinet slots are numbered 1..N across boards in bus order (see `locate`). Physical actions
    (insert, take, tamper, faults) take cabinet slot numbers; `board(address)` gives the board.
    """

    def __init__(self, config: SimConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.clock: Clock = clock if clock is not None else ManualClock()
        seed = self.config.seed
        self._link_rng = random.Random(f"{seed}:link")
        self.rng = random.Random(f"{seed}:cabinet")
        """Randomness for callers that act on this cabinet (users, scenarios)."""
        self.timeline = Timeline(
            self.clock.now(), self._advance_physics, self.config.physics_step_s
        )
        self._listeners: list[Listener] = []
        self._transmit_listeners: list[TransmitListener] = []
        self.slot_map = self.config.slot_map()
        self.boards: dict[int, Board] = {
            address: Board(
                address,
                self.config,
                self.timeline,
                random.Random(f"{seed}:board:{address}"),
                self._notify,
            )
            for address in self.config.board_addresses()
        }
        faults = self.config.faults
        self.link = LinkFaults(
            corrupt_byte_rate=faults.corrupt_byte_rate,
            drop_response_rate=faults.drop_response_rate,
            late_response_rate=faults.late_response_rate,
            late_response_delay_s=faults.late_response_delay_s,
            local_echo=faults.local_echo,
        )
        self.port_online = True
        self._port_timer: TimerHandle | None = None
        for board in self.boards.values():
            board.boot(BootReason.POWER_ON, unresponsive_s=0.0)
        self._fill_slots(random.Random(f"{seed}:banks"))

        self.emulation: Emulation = self._make_emulation()
        """The wire protocol that `config.protocol` selects."""

    def _make_emulation(self) -> Emulation:
        if self.config.protocol == "gzxj":
            return GzxjStation(self)
        if self.config.protocol == "s1tt":
            return S1ttBoards(self)
        return NativeEmulation(self)

    # Layout

    @property
    def slot_count(self) -> int:
        return len(self.slot_map)

    def locate(self, slot: int) -> SlotAddress:
        """Return the board address and local slot of cabinet slot `slot` (1-based)."""
        if not 1 <= slot <= len(self.slot_map):
            raise SimulationError(f"cabinet slot {slot} is outside 1..{len(self.slot_map)}")
        return self.slot_map[slot - 1]

    def cabinet_slot(self, board: int, local_slot: int) -> int:
        """Return the cabinet slot number of a board's local slot."""
        try:
            return self.slot_map.index(SlotAddress(board, local_slot)) + 1
        except ValueError:
            raise SimulationError(f"board {board} has no slot {local_slot}") from None

    def board(self, address: int) -> Board:
        try:
            return self.boards[address]
        except KeyError:
            raise SimulationError(f"no board at address {address}") from None

    def slot(self, slot: int) -> Slot:
        where = self.locate(slot)
        return self.boards[where.board].slot(where.slot)

    def free_slots(self) -> list[int]:
        """Cabinet slots that are empty, locked and without a take window."""
        return [
            number
            for number in range(1, self.slot_count + 1)
            if (s := self.slot(number)).bank is None and s.window is None
        ]

    # Time

    @property
    def now(self) -> float:
        return self.timeline.now

    def update(self, *, max_physics_lag_s: float = 0.0) -> None:
        """Bring the simulation up to the clock's time.

        Every timer due by then runs. With `max_physics_lag_s` above 0, physics (charge,
        temperature, charging thresholds) is left behind unless it lags by at least that much.
        """
        until = max(self.clock.now(), self.timeline.now)
        self.timeline.run_until(until, max_physics_lag_s=max_physics_lag_s)

    def advance(self, seconds: float) -> None:
        """Move a ManualClock forward by `seconds` and run everything due in that time."""
        if not isinstance(self.clock, ManualClock):
            raise SimulationError("advance() needs a ManualClock; other clocks move by themselves")
        self.clock.advance(seconds)
        self.update()

    def schedule(self, at: float, action: Callable[[], None]) -> TimerHandle:
        """Run `action` at simulation time `at`."""
        return self.timeline.schedule(at, action)

    def _advance_physics(self, seconds: float) -> None:
        # A board that synced itself for a request may already be past this step's start.
        target = self.timeline.physics_time + seconds
        for board in self.boards.values():
            board.integrate_to(target)

    # Notices

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every notice; return a function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, notice: Notice) -> None:
        for listener in list(self._listeners):
            listener(notice)

    # The line

    def receive(self, data: bytes) -> list[Transmission]:
        """Feed bytes from the master; return what the cabinet sends back, in order."""
        self.update(max_physics_lag_s=RECEIVE_PHYSICS_LAG_S)
        if not self.port_online:
            return []
        out: list[Transmission] = []
        if self.link.local_echo and data:
            out.append(Transmission(0.0, bytes(data), echo=True))
        for reply in self.emulation.handle(self._corrupt(data)):
            if self._link_rng.random() < self.link.drop_response_rate:
                logger.debug("%s: response dropped", reply.label)
                continue
            delay = self.config.turnaround_s + reply.extra_delay_s
            if self._link_rng.random() < self.link.late_response_rate:
                delay += self.link.late_response_delay_s
            out.append(Transmission(delay, self._corrupt(reply.data)))
        return out

    def subscribe_unsolicited(self, listener: TransmitListener) -> Callable[[], None]:
        """Call `listener` with every frame a board sends on its own, such as a GZXJ report.

        Return a function that unsubscribes it. Transports subscribe while they serve.
        """
        self._transmit_listeners.append(listener)
        return lambda: self._transmit_listeners.remove(listener)

    def send_unsolicited(self, data: bytes, label: str = "") -> None:
        """Send a frame that no request asked for, through the same line faults as replies.

        Without a subscribed transport the frame is lost, like bytes on an unread line.
        """
        if not self.port_online:
            return
        if self._link_rng.random() < self.link.drop_response_rate:
            logger.debug("%s: unsolicited frame dropped", label)
            return
        delay = 0.0
        if self._link_rng.random() < self.link.late_response_rate:
            delay += self.link.late_response_delay_s
        transmission = Transmission(delay, self._corrupt(data))
        for listener in list(self._transmit_listeners):
            listener(transmission)

    def handle_bytes(self, data: bytes) -> bytes:
        """Feed bytes from the master and return every byte sent back, ignoring delays."""
        return b"".join(transmission.data for transmission in self.receive(data))

    def _corrupt(self, data: bytes) -> bytes:
        rate = self.link.corrupt_byte_rate
        if rate <= 0:
            return data
        out = bytearray(data)
        for index in range(len(out)):
            if self._link_rng.random() < rate:
                out[index] ^= 1 << self._link_rng.randrange(8)
        return bytes(out)

    def port_down(self, duration_s: float | None = None) -> None:
        """Make the serial port disappear, for `duration_s` seconds or until `port_up`."""
        self.update()
        if self._port_timer is not None:
            self._port_timer.cancel()
            self._port_timer = None
        if self.port_online:
            self.port_online = False
            self.emulation.reset_input()
            logger.info("serial port down")
            self._notify(Notice(NoticeKind.PORT_DOWN, 0, 0))
        if duration_s is not None:
            self._port_timer = self.timeline.schedule_in(duration_s, self.port_up)

    def port_up(self) -> None:
        self.update()
        if self._port_timer is not None:
            self._port_timer.cancel()
            self._port_timer = None
        if not self.port_online:
            self.port_online = True
            logger.info("serial port up")
            self._notify(Notice(NoticeKind.PORT_UP, 0, 0))

    # Physical actions on cabinet slots

    def insert_bank(
        self,
        slot: int,
        bank: Bank | None = None,
        *,
        bank_id: bytes | None = None,
        charge: float | None = None,
        capacity_mah: int | None = None,
        seated: bool = True,
        backwards: bool = False,
        readable: bool = True,
    ) -> Bank:
        """Insert a bank (a new random one unless given); the board reports it after debounce.

        `seated=False` is a bank not pushed fully in, `backwards=True` one inserted the wrong
        way round, `readable=False` one whose id chip does not respond.
        """
        self.update()
        if bank is None:
            bank = Bank(
                bank_id=bank_id if bank_id is not None else random_bank_id(self.rng),
                capacity_mah=capacity_mah or self.rng.choice(self.config.banks.capacities_mah),
                charge=charge if charge is not None else 50.0,
                temperature_c=self.config.charging.ambient_c,
            )
        bank.readable = readable
        where = self.locate(slot)
        self.boards[where.board].insert(where.slot, bank, seated=seated, backwards=backwards)
        return bank

    def remove_bank(self, slot: int) -> Bank:
        """Pull the bank out of an open slot (take window, forced latch or unreturned lock)."""
        self.update()
        where = self.locate(slot)
        return self.boards[where.board].remove(where.slot)

    def take(self, slot: int) -> Bank:
        """Take the bank during its take window, as a renter does."""
        self.update()
        if self.slot(slot).window is None:
            raise SimulationError(f"cabinet slot {slot} has no take window running")
        return self.remove_bank(slot)

    def force_open(self, slot: int) -> None:
        self.update()
        where = self.locate(slot)
        self.boards[where.board].force_open(where.slot)

    def tamper(self, slot: int) -> Bank | None:
        """Force the latch open and pull out the bank, if there is one."""
        self.force_open(slot)
        return self.remove_bank(slot) if self.slot(slot).bank is not None else None

    def set_fault(self, slot: int, fault: InjectedFault, active: bool = True) -> None:
        self.update()
        where = self.locate(slot)
        self.boards[where.board].set_fault(where.slot, fault, active)

    def set_temperature(self, slot: int, celsius: float) -> None:
        self.update()
        bank = self._bank_in(slot)
        bank.temperature_c = celsius

    def set_charge(self, slot: int, percent: float) -> None:
        self.update()
        if not 0 <= percent <= 100:
            raise SimulationError(f"charge {percent} is outside 0..100 %")
        bank = self._bank_in(slot)
        bank.charge = percent

    def _bank_in(self, slot: int) -> Bank:
        bank = self.slot(slot).bank
        if bank is None:
            raise SimulationError(f"cabinet slot {slot} is empty")
        return bank

    def set_board_silent(self, address: int | str, silent: bool = True) -> None:
        """Make a board stop responding (or respond again); it keeps working meanwhile.

        Under GZXJ the only board on the line is the station, at its GZXJ address.
        """
        self.update()
        self.emulation.set_silent(address, silent)

    def power_cycle(self, address: int | str, reason: BootReason = BootReason.POWER_ON) -> None:
        """Restart a board; under GZXJ this resets the station (see `GzxjStation.reset`)."""
        self.update()
        self.emulation.restart(address, reason)

    # Start-up

    def _fill_slots(self, rng: random.Random) -> None:
        mix = self.config.banks
        for number in range(1, self.slot_count + 1):
            if rng.random() >= mix.fill_ratio:
                continue
            if rng.random() < mix.rentable_share:
                charge = rng.uniform(mix.rentable_percent, 100)
            else:
                charge = rng.uniform(0, max(0, mix.rentable_percent - 1))
            bank = random_bank(rng, mix.capacities_mah, charge, mix.max_cycles)
            bank.temperature_c = self.config.charging.ambient_c
            where = self.locate(number)
            self.boards[where.board].place(where.slot, bank)
