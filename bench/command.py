"""command: eject command arrival at the gateway's MQTT connection to UNLOCK on the serial line.

The daemon runs as its own process, on its default polling intervals. Its MQTT connection
passes through a proxy that notes when the last byte of each PUBLISH from the broker arrives.
The simulator runs in a child process, as boards run on their own hardware, and notes when
the bytes of an UNLOCK request arrive from the gateway. The difference, per command, is the
gateway's latency plus one proxy hop and one pty hop. Commands go one at a time to slots in
turn. The bank is taken as soon as the UNLOCK arrives and put back after the result. The next
command follows the report of that return after a random pause of up to one busy poll
interval. Commands therefore meet the bus at random points of its polling, as rentals do,
and not always while the return is being read. The baseline is the broker's loopback latency, from a
QoS 1 publish to its arrival at a subscriber on the same broker, measured in the same run. The
summary also gives the latency of a one-row durable SQLite commit in the daemon's state
directory, the step that the gateway must finish before every UNLOCK."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.broker import Broker, mosquitto
from bench.gatewayproc import gateway_process, write_toml
from bench.proxy import MQTT_PUBLISH, CountingProxy
from bench.result import BenchResult, safe_ratio
from bench.simproc import Control, child_process, serve_controlled
from cabinet_sim import Bank, Cabinet, MonotonicClock, SimConfig
from cabinet_sim.config import BankMix
from cloud_link.commands import EjectCommand
from gateway.cloudtool import BrokerAddress, ReceivedMessage, ScriptedCloud, public_key_of
from protocol.slotbus import Command, Deframer, UnlockRequest, decode_request

CABINET = "BENCH-0001"
KEY_ID = "bench-key"
BOARDS = 4
SLOTS_PER_BOARD = 6
TARGET_P99_MS = 5.0
FULL_COMMANDS = 1000
QUICK_COMMANDS = 60
WARMUP_COMMANDS = 5
STEP_TIMEOUT_S = 10.0
SIM_LIFETIME_S = 3600.0
"""Upper bound on the simulator process's life; the full run takes about 12 minutes."""
PAUSE_MAX_S = 0.3
"""Maximum pause before the next command: the default busy poll interval of a board."""
PAUSE_SEED = 7
PROBE_SPACING_S = 0.01
"""Pause between two probe commits, so each fsync meets an idle disk as a command's does."""


class TappedCabinet(Cabinet):
    """A simulated cabinet that reports when UNLOCK requests arrive, and for which slot.

    Each arrival, as time.monotonic() and cabinet slot number, goes to `notify`, by default
    to the queue `unlock_arrived`. The clock is the same in every process of the machine, so
    a simulator process can send the arrivals to the benchmark.
    """

    def __init__(
        self,
        config: SimConfig,
        clock: MonotonicClock | None = None,
        notify: Callable[[float, int], None] | None = None,
    ) -> None:
        super().__init__(config, clock=clock or MonotonicClock())
        self._deframer = Deframer()
        self._slot_numbers = {
            (where.board, where.slot): number
            for number, where in enumerate(config.slot_map(), start=1)
        }
        self.unlock_arrived: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
        self._on_unlock = notify or (lambda at, slot: self.unlock_arrived.put_nowait((at, slot)))

    def receive(self, data: bytes) -> list[Any]:
        at = time.monotonic()
        for frame in self._deframer.feed(data):
            if frame.is_response or frame.command_id != Command.UNLOCK:
                continue
            body = decode_request(frame).body
            if isinstance(body, UnlockRequest):
                slot = self._slot_numbers.get((frame.address, body.slot), 0)
                self._on_unlock(at, slot)
        return super().receive(data)


def serve_tapped(config: SimConfig, link_path: str, control: Control) -> None:
    """Run a TappedCabinet in the simulator process; ("take" | "put_back", slot) requests
    move a bank out of its slot and back."""
    cabinet = TappedCabinet(config, notify=lambda at, slot: control.send(("unlock", at, slot)))
    banks_out: dict[int, Bank] = {}

    def handle(request: tuple[str, int]) -> int:
        operation, slot = request
        if operation == "take":
            banks_out[slot] = cabinet.take(slot)
        else:
            cabinet.insert_bank(slot, banks_out.pop(slot))
        return slot

    serve_controlled(cabinet, link_path, SIM_LIFETIME_S, control, handle)


class SimulatorClient:
    """The benchmark's side of the simulator process: UNLOCK arrivals and bank moves."""

    def __init__(self, control: Control) -> None:
        self._control = control
        self.unlock_arrived: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
        """Arrival time (time.monotonic()) and cabinet slot number of each UNLOCK request."""
        self._replies: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    @contextlib.contextmanager
    def reading(self) -> Iterator[SimulatorClient]:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._control.fileno(), self._on_message)
        try:
            yield self
        finally:
            loop.remove_reader(self._control.fileno())

    def _on_message(self) -> None:
        while self._control.poll():
            try:
                kind, *values = self._control.recv()
            except EOFError:
                asyncio.get_running_loop().remove_reader(self._control.fileno())
                self._replies.put_nowait(("error", "the simulator process ended"))
                return
            if kind == "unlock":
                self.unlock_arrived.put_nowait((values[0], values[1]))
            else:
                self._replies.put_nowait((kind, values[0]))

    async def _ask(self, operation: str, slot: int) -> None:
        self._control.send((operation, slot))
        async with asyncio.timeout(STEP_TIMEOUT_S):
            kind, value = await self._replies.get()
        if kind != "reply":
            raise RuntimeError(f"simulator: {value}")

    async def take(self, slot: int) -> None:
        await self._ask("take", slot)

    async def put_back(self, slot: int) -> None:
        await self._ask("put_back", slot)


class Results:
    """Command results seen by the cloud, by command id, and returns, by slot."""

    def __init__(self) -> None:
        self.done: dict[str, asyncio.Event] = {}
        self.returned: dict[int, asyncio.Event] = {}

    def expect(self, command_id: str) -> asyncio.Event:
        return self.done.setdefault(command_id, asyncio.Event())

    def expect_return(self, slot: int) -> asyncio.Event:
        return self.returned.setdefault(slot, asyncio.Event())

    def on_message(self, message: ReceivedMessage) -> None:
        envelope = message.envelope
        if envelope is None:
            return
        data = envelope.data
        if data.kind == "bank_returned":
            self.expect_return(data.slot).set()
        elif data.kind == "command_result" and data.command_id is not None:
            self.expect(data.command_id).set()


def gateway_config(state_dir: Path, port: str, proxy_port: int, public_key: str) -> dict[str, Any]:
    return {
        "cabinet": {"id": CABINET, "state_dir": str(state_dir), "low_stock_threshold": 0},
        "serial": {
            "port": port,
            "boards": [
                {"address": address, "slot_count": SLOTS_PER_BOARD}
                for address in range(1, BOARDS + 1)
            ],
            "settle_s": 0.5,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": proxy_port,
            "mqtt_version": "5",
            "tls": {"enabled": False},
            "commands": {"trusted_keys": {KEY_ID: public_key}, "clock_sync": "synchronised"},
        },
        "control": {"socket": str(state_dir / "control.sock")},
        "log": {"level": "INFO"},
    }


async def broker_loopback(broker: Broker, samples: int) -> list[float]:
    """Return publish-to-subscriber seconds of `samples` QoS 1 messages, one at a time."""
    topic = "bench/loopback"
    latencies: list[float] = []
    async with (
        aiomqtt.Client(broker.host, broker.port, identifier="bench-loop-sub") as subscriber,
        aiomqtt.Client(broker.host, broker.port, identifier="bench-loop-pub") as publisher,
    ):
        await subscriber.subscribe(topic, qos=1)
        messages = aiter(subscriber.messages)
        for number in range(samples):
            started = time.monotonic()
            await publisher.publish(topic, str(number).encode(), qos=1)
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await anext(messages)
            latencies.append(time.monotonic() - started)
    return latencies


def durable_commits(directory: Path, samples: int) -> list[float]:
    """Return the seconds of `samples` one-row SQLite commits at synchronous=FULL in WAL mode.

    The gateway commits one such row (the command store's record) before each UNLOCK, so that
    a redelivered command never ejects twice. These figures are that step's floor on this disk.
    The commits are spaced as commands are: on the development VM an fsync after a pause took
    about 0.85 ms at the median, against 0.35 ms back to back.
    """
    path = directory / "fsync-probe.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        body = "x" * 300  # about the size of a stored command body
        latencies = []
        for _ in range(samples):
            time.sleep(PROBE_SPACING_S)
            started = time.monotonic()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO probe (body) VALUES (?)", (body,))
            conn.execute("COMMIT")
            latencies.append(time.monotonic() - started)
        return latencies
    finally:
        conn.close()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def eject_once(
    simulator: SimulatorClient,
    cloud: ScriptedCloud,
    results: Results,
    publishes: asyncio.Queue[float],
    slot: int,
) -> float:
    """Eject from `slot`, take the bank and put it back after the result; return the latency."""
    command_id = await cloud.send(EjectCommand(slot=slot))
    done = results.expect(command_id)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        arrived = await publishes.get()
        unlocked, _ = await simulator.unlock_arrived.get()
    await simulator.take(slot)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await done.wait()
    returned = results.expect_return(slot)
    returned.clear()
    await simulator.put_back(slot)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await returned.wait()
    return unlocked - arrived


async def measure(work: Path, commands: int) -> tuple[list[float], list[float], list[float]]:
    """Return the gateway latencies, broker loopback latencies and durable commits, in seconds."""
    sim = SimConfig(
        boards=BOARDS,
        slots_per_board=SLOTS_PER_BOARD,
        seed=5,
        banks=BankMix(fill_ratio=1.0, rentable_share=1.0),
    )
    key = Ed25519PrivateKey.generate()
    publishes: asyncio.Queue[float] = asyncio.Queue()

    def on_packet(packet_type: int, at: float) -> None:
        if packet_type == MQTT_PUBLISH:
            publishes.put_nowait(at)

    results = Results()
    state = work / "state"
    state.mkdir()
    link = work / "ttyCAB"
    with (
        mosquitto(work / "broker") as broker,
        child_process(serve_tapped, (sim, str(link))) as control,
        SimulatorClient(control).reading() as simulator,
    ):
        proxy = CountingProxy(broker.port, tap=on_packet)
        async with proxy.serving():
            config = work / "gateway.toml"
            write_toml(config, gateway_config(state, str(link), proxy.port, public_key_of(key)))
            cloud = ScriptedCloud(
                BrokerAddress(broker.host, broker.port, tls=False),
                cabinet_id=CABINET,
                key=key,
                key_id=KEY_ID,
                mqtt_version="5",
                on_message=results.on_message,
            )
            pauses = random.Random(PAUSE_SEED)
            # The cloud subscribes before the daemon starts: an event published to no
            # subscriber waits for a retry, and later events of its lane wait behind it.
            async with cloud.connected():
                # The daemon's start and stop block, and the simulator must keep responding.
                gateway = contextlib.ExitStack()
                await asyncio.to_thread(
                    gateway.enter_context, gateway_process(config, work / "gateway.log")
                )
                try:
                    latencies = []
                    for number in range(commands + WARMUP_COMMANDS):
                        slot = 1 + number % sim.slot_count
                        latency = await eject_once(simulator, cloud, results, publishes, slot)
                        if number >= WARMUP_COMMANDS:
                            latencies.append(latency)
                        await asyncio.sleep(pauses.uniform(0.0, PAUSE_MAX_S))
                    loopback = await broker_loopback(broker, commands)
                finally:
                    await asyncio.to_thread(gateway.close)
    return latencies, loopback, durable_commits(state, commands)


def run(quick: bool) -> tuple[BenchResult, list[str]]:
    commands = QUICK_COMMANDS if quick else FULL_COMMANDS
    with tempfile.TemporaryDirectory(prefix="bench-command-") as workdir:
        latencies, loopback, commits = asyncio.run(measure(Path(workdir), commands))

    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    loop50, loop99 = percentile(loopback, 0.5) * 1000, percentile(loopback, 0.99) * 1000
    summary = [
        f"command: {len(latencies)} eject commands one at a time after {WARMUP_COMMANDS} "
        f"warm-up commands, {BOARDS * SLOTS_PER_BOARD}-slot simulator on a pty, MQTT 5, "
        f"0 to {PAUSE_MAX_S} s between a return and the next command",
        f"  PUBLISH at the gateway's connection -> UNLOCK on the serial line: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(latencies) * 1000:.2f} ms",
        f"  broker loopback, QoS 1 publish -> subscriber: p50 {loop50:.2f} ms, "
        f"p99 {loop99:.2f} ms ({len(loopback)} messages)",
        f"  one-row SQLite commit at synchronous=FULL in the state directory (the durable "
        f"command record before each UNLOCK): p50 {percentile(commits, 0.5) * 1000:.2f} ms, "
        f"p99 {percentile(commits, 0.99) * 1000:.2f} ms ({len(commits)} commits)",
    ]
    result = BenchResult(
        name="command",
        value=p99,
        unit="ms (p99)",
        baseline=loop99,
        ratio=safe_ratio(p99, loop99),
        target=f"p99 <= {TARGET_P99_MS} ms",
        met=p99 <= TARGET_P99_MS,
    )
    return result, summary
