"""uplink: MQTT bytes per cabinet-day against publishing the full state as JSON every 30 s.

A reference day is 24 slots, 50 rents and 50 returns at the default intervals. The gateway
has no compressed clock of its own, so the day is compressed by a factor K on both sides.
The simulator's clock runs K times faster (charging, heat, take windows). The daemon's
time-based uplink intervals (heartbeat, battery-health reports) are divided by K. The bus
polling runs in real time but sends nothing upstream by itself. MQTT keepalive cannot be
scaled (its minimum is 5 s), so it is set to the maximum and the PINGREQ/PINGRESP bytes of a
real day at the default 60 s are added: 2 + 2 bytes per minute. Bytes are counted in both
directions by a proxy between the daemon and Mosquitto.

The baseline publishes a payload the size of the gateway's birth message (the full state of
every slot as JSON) at QoS 1 every 30 s of the day, 2,880 times, through a second proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.broker import mosquitto
from bench.command import TappedCabinet
from bench.gatewayproc import gateway_process, write_toml
from bench.proxy import CountingProxy
from bench.result import BenchResult, safe_ratio
from cabinet_sim import SimConfig, SimulationError
from cabinet_sim.clock import MonotonicClock
from cabinet_sim.transports import PtyTransport
from cloud_link.commands import EjectCommand
from cloud_link.messages import CommandResult
from gateway.cloudtool import BrokerAddress, ReceivedMessage, ScriptedCloud, public_key_of

CABINET = "BENCH-0001"
KEY_ID = "bench-key"
DAY_S = 86_400.0
BASELINE_INTERVAL_S = 30.0
RENTS = 50
RETURNS = 50
FULL_DAY_REAL_S = 480.0
QUICK_DAY_REAL_S = 40.0
DEFAULT_HEARTBEAT_S = 300.0
DEFAULT_BATTERY_REPORT_S = 3600.0
DEFAULT_KEEPALIVE_S = 60
PING_EXCHANGE_BYTES = 4
TARGET_BYTES = 1_000_000
TARGET_RATIO = 0.1
UNLOCK_TIMEOUT_S = 3.0
DELIVERY_TIMEOUT_S = 15.0
MIN_RENT_CHARGE = 85.0


@dataclass
class Inbox:
    kinds: dict[str, int] = field(default_factory=dict)
    birth: bytes | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    results: dict[str, asyncio.Event] = field(default_factory=dict)

    def result(self, command_id: str) -> asyncio.Event:
        return self.results.setdefault(command_id, asyncio.Event())

    def on_message(self, message: ReceivedMessage) -> None:
        if message.envelope is None:
            return
        data = message.envelope.data
        kind = data.kind
        if isinstance(data, CommandResult) and data.command_id is not None:
            self.result(data.command_id).set()
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind == "birth":
            self.birth = message.raw
        self.changed.set()

    async def wait_count(self, kind: str, count: int) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                while self.kinds.get(kind, 0) < count:
                    self.changed.clear()
                    await self.changed.wait()
        return self.kinds.get(kind, 0) >= count


def gateway_config(
    state_dir: Path, port: str, proxy_port: int, public_key: str, speed: float
) -> dict[str, Any]:
    return {
        "cabinet": {
            "id": CABINET,
            "state_dir": str(state_dir),
            "battery_report_interval_s": DEFAULT_BATTERY_REPORT_S / speed,
            "shutdown_eject_wait_s": 1.0,
        },
        "serial": {
            "port": port,
            "boards": [{"address": address, "slot_count": 6} for address in range(1, 5)],
            "unlock_window_s": 120,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": proxy_port,
            "mqtt_version": "5",
            "tls": {"enabled": False},
            "keepalive_s": 65535,
            "heartbeat_interval_s": DEFAULT_HEARTBEAT_S / speed,
            "commands": {"trusted_keys": {KEY_ID: public_key}, "clock_sync": "synchronised"},
        },
        "control": {"socket": str(state_dir / "control.sock")},
        "log": {"level": "INFO"},
    }


@dataclass
class DayTally:
    rents: int = 0
    returns: int = 0
    failed_rents: int = 0
    rented: list[Any] = field(default_factory=list)


async def rent(cabinet: TappedCabinet, cloud: ScriptedCloud, inbox: Inbox, tally: DayTally) -> None:
    """Ask for a bank that the cabinet chooses, and take it as soon as its UNLOCK arrives."""
    while not cabinet.unlock_arrived.empty():
        cabinet.unlock_arrived.get_nowait()
    command_id = await cloud.send(EjectCommand())
    unlock = asyncio.ensure_future(cabinet.unlock_arrived.get())
    result = asyncio.ensure_future(inbox.result(command_id).wait())
    try:
        await asyncio.wait(
            {unlock, result}, timeout=UNLOCK_TIMEOUT_S, return_when="FIRST_COMPLETED"
        )
    finally:
        result.cancel()
        if not unlock.done():
            unlock.cancel()
    if not unlock.done() or unlock.cancelled():
        tally.failed_rents += 1
        return
    _, slot = unlock.result()
    # The tap saw the UNLOCK just before the board handled it in the same call, so the take
    # window is open now.
    try:
        tally.rented.append(cabinet.take(slot))
    except SimulationError:
        tally.failed_rents += 1
        return
    tally.rents += 1


def give_back(cabinet: TappedCabinet, tally: DayTally) -> None:
    """Return a rented bank (or a new one) into the first free slot."""
    free = cabinet.free_slots()
    if not free:
        return
    bank = tally.rented.pop(0) if tally.rented else None
    cabinet.insert_bank(free[0], bank, charge=None if bank else 40.0)
    tally.returns += 1


async def live_day(
    cabinet: TappedCabinet, cloud: ScriptedCloud, inbox: Inbox, day_real_s: float, tally: DayTally
) -> None:
    """Alternate rents and returns, evenly spread over the compressed day."""
    actions = RENTS + RETURNS
    started = time.monotonic()
    for number in range(actions):
        due = started + (number + 0.5) * day_real_s / actions
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if number % 2 == 0:
            await rent(cabinet, cloud, inbox, tally)
        else:
            give_back(cabinet, tally)
    await asyncio.sleep(max(0.0, started + day_real_s - time.monotonic()))


async def gateway_day(work: Path, day_real_s: float) -> tuple[int, DayTally, Inbox, bool]:
    """Run the daemon through one compressed day and return its bytes, tally and inbox."""
    speed = DAY_S / day_real_s
    sim = SimConfig(boards=4, slots_per_board=6, seed=11, physics_step_s=30.0)
    cabinet = TappedCabinet(sim, clock=MonotonicClock(speed))
    key = Ed25519PrivateKey.generate()
    inbox = Inbox()
    tally = DayTally()
    state = work / "state"
    state.mkdir()
    with mosquitto(work / "broker") as broker:
        proxy = CountingProxy(broker.port)
        async with PtyTransport(cabinet, link_path=work / "ttyCAB") as pty, proxy.serving():
            config = work / "gateway.toml"
            data = gateway_config(state, pty.device_path, proxy.port, public_key_of(key), speed)
            write_toml(config, data)
            cloud = ScriptedCloud(
                BrokerAddress(broker.host, broker.port, tls=False),
                cabinet_id=CABINET,
                key=key,
                key_id=KEY_ID,
                mqtt_version="5",
                on_message=inbox.on_message,
            )
            async with cloud.connected():
                gateway = contextlib.ExitStack()
                # Counting starts before the daemon connects, so the day includes one connect
                # and one birth.
                await asyncio.to_thread(
                    gateway.enter_context, gateway_process(config, work / "gateway.log")
                )
                try:
                    await live_day(cabinet, cloud, inbox, day_real_s, tally)
                    delivered = await inbox.wait_count(
                        "bank_returned", tally.returns
                    ) and await inbox.wait_count("command_result", tally.rents)
                    day_bytes = proxy.counts.total
                finally:
                    await asyncio.to_thread(gateway.close)
    return day_bytes, tally, inbox, delivered


async def baseline_day(work: Path, payload: bytes) -> int:
    """Publish `payload` at QoS 1 once per 30 s of a day; return the bytes on the connection."""
    publishes = int(DAY_S / BASELINE_INTERVAL_S)
    with mosquitto(work / "baseline-broker") as broker:
        proxy = CountingProxy(broker.port)
        async with proxy.serving():
            async with aiomqtt.Client(
                broker.host,
                proxy.port,
                identifier="naive-gateway",
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as client:
                for _ in range(publishes):
                    await client.publish(f"cabinets/{CABINET}/state", payload, qos=1)
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await proxy.counts.closed.wait()
            return proxy.counts.total


def run(quick: bool) -> tuple[BenchResult, list[str]]:
    day_real_s = QUICK_DAY_REAL_S if quick else FULL_DAY_REAL_S
    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as workdir:
        work = Path(workdir)
        day_bytes, tally, inbox, delivered = asyncio.run(gateway_day(work, day_real_s))
        if inbox.birth is None:
            raise RuntimeError("the gateway published no birth message")
        baseline = asyncio.run(baseline_day(work, inbox.birth))

    pings = int(DAY_S / DEFAULT_KEEPALIVE_S) * PING_EXCHANGE_BYTES
    total = day_bytes + pings
    ratio = safe_ratio(total, baseline)
    summary = [
        f"uplink: one day compressed {DAY_S / day_real_s:.0f}x into {day_real_s:.0f} s, "
        f"24 slots, {tally.rents} rents ({tally.failed_rents} failed), {tally.returns} returns",
        f"  gateway bytes on the MQTT connection, both directions: {day_bytes}",
        f"  keepalive added: {pings} bytes ({DEFAULT_KEEPALIVE_S} s interval, "
        f"{PING_EXCHANGE_BYTES} bytes per PINGREQ/PINGRESP)",
        f"  messages seen by the cloud: {dict(sorted(inbox.kinds.items()))}",
        f"  every rent's result and every return delivered: {delivered}",
        f"  baseline: {len(inbox.birth)}-byte full-state JSON every {BASELINE_INTERVAL_S:.0f} s "
        f"at QoS 1: {baseline} bytes",
    ]
    met = (
        total <= TARGET_BYTES
        and ratio <= TARGET_RATIO
        and delivered
        and tally.rents == RENTS
        and tally.returns == RETURNS
    )
    result = BenchResult(
        name="uplink",
        value=total,
        unit="bytes/day",
        baseline=baseline,
        ratio=ratio,
        target=(
            f"<= {TARGET_BYTES} bytes/day, ratio <= {TARGET_RATIO}, "
            f"{RENTS} rents and {RETURNS} returns all delivered"
        ),
        met=met,
    )
    return result, summary
