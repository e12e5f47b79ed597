"""`cabinet-gateway demo`: a simulated cabinet, a broker, the gateway and a scripted cloud.

Everything runs in one process on 127.0.0.1, with state in a temporary directory. The
simulator serves a pseudo-terminal and an embedded amqtt broker (MQTT 3.1.1) runs unless a
broker URL is given. The daemon uses embedded defaults, and a cloud rents banks with signed
commands while simulated users take them and bring others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cabinet_sim import SimConfig
from cabinet_sim.runtime import RunOptions, Simulation
from cabinet_sim.users import UserBehaviour
from cloud_link.commands import EjectCommand
from gateway.cli_diag import names
from gateway.cloudtool import BrokerAddress, ReceivedMessage, ScriptedCloud, public_key_of
from gateway.config import config_from_dict
from gateway.daemon import Daemon
from gateway.i18n import _

logger = logging.getLogger(__name__)

CABINET_ID = "DEMO-0001"
KEY_ID = "demo-key"
READY_TIMEOUT_S = 60.0
LOG_LINES = 12
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    broker_url: str | None = None
    duration_s: float | None = None
    rent_interval_s: float = 8.0
    returns_per_hour: float = 450.0  # as many as the rents, one every 8 s
    seed: int = 1
    view: bool = True


@dataclass
class DemoStats:
    commands_sent: int = 0
    results: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    echo: Console | None = None  # prints each line as it comes when there is no live view

    def on_message(self, message: ReceivedMessage) -> None:
        envelope = message.envelope
        if envelope is None:
            if message.topic.endswith("/status"):
                self.log.append(f"status: {message.raw.decode(errors='replace')[:80]}")
            return
        data = envelope.data
        self.events[data.kind] += 1
        line = _describe(envelope.seq, data)
        if line:
            self.log.append(line)
            if self.echo is not None:
                self.echo.print(line, highlight=False)
        if data.kind == "command_result":
            outcome = data.eject.outcome.value if data.eject else data.status.value
            self.results[outcome] += 1


def _describe(seq: int, data: Any) -> str | None:
    kind = data.kind
    if kind == "eject_outcome":
        report = data.report
        reason = report.fail_reason or report.reject_reason
        where = f"slot {report.slot} bank {report.bank_id}" if report.slot else "no slot"
        return f"#{seq} eject {report.outcome} {where}" + (f" ({reason})" if reason else "")
    if kind == "bank_returned":
        bank = data.bank_id if data.recognised else "unidentified bank"
        return f"#{seq} return slot {data.slot}: {bank}"
    if kind == "command_result":
        return f"#{seq} result {data.command_id}: {data.status}"
    if kind in ("fault", "security", "low_stock", "birth"):
        return f"#{seq} {kind}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """An amqtt broker on 127.0.0.1 (MQTT 3.1.1, anonymous, no TLS): for the demo only."""

    def __init__(self, port: int) -> None:
        from amqtt.broker import Broker

        self.port = port
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )

    async def __aenter__(self) -> EmbeddedBroker:
        await self._broker.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._broker.shutdown()


def demo_config(
    state_dir: Path, pty_path: str, sim: SimConfig, broker: BrokerAddress, key: str
) -> dict[str, Any]:
    """Build the daemon's config for the demo: embedded defaults, local broker, no TLS."""
    return {
        "cabinet": {"id": CABINET_ID, "state_dir": str(state_dir), "low_stock_threshold": 2},
        "serial": {
            "port": pty_path,
            "boards": [
                {"address": address, "slot_count": sim.slots_per_board}
                for address in sim.board_addresses()
            ],
        },
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "mqtt_version": "3.1.1",
            "tls": {"enabled": broker.tls},
            "heartbeat_interval_s": 60,
            "commands": {"trusted_keys": {KEY_ID: key}, "clock_sync": "synchronised"},
        },
        "control": {"socket": str(state_dir / "control.sock")},
    }


async def run_demo(options: DemoOptions, console: Console) -> DemoStats:
    """Run the demo until the duration ends, SIGINT or SIGTERM arrives, or the daemon stops.

    The demo handles both signals itself instead of the daemon, so that a signal stops the
    scripted cloud and the simulator too, and the embedded broker shuts down before
    `asyncio.run` cancels what is left. While this coroutine runs, a signal during start-up
    or a second one during the shutdown only sets the same event, so no KeyboardInterrupt is
    raised inside a task.
    """
    stats = DemoStats(echo=None if options.view else console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        await _run_parts(options, console, stats, stop)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return stats


async def _run_parts(
    options: DemoOptions, console: Console, stats: DemoStats, stop: asyncio.Event
) -> None:
    """Run the simulator, the broker, the daemon and the cloud until `_drive` returns."""
    key = Ed25519PrivateKey.generate()
    sim_config = SimConfig(seed=options.seed)
    behaviour = UserBehaviour(returns_per_hour=options.returns_per_hour)
    simulation = Simulation(
        RunOptions(config=sim_config, users=behaviour, pty=True, view=False, stdin=False),
        console,
    )
    with tempfile.TemporaryDirectory(prefix="cabinet-demo-") as tmp:
        state_dir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tasks:
            endpoints: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
            sim_task = tasks.create_task(simulation.run(endpoints.set_result), name="simulator")
            pty_path = (await endpoints)[0]

            if options.broker_url:
                broker = BrokerAddress.parse(options.broker_url)
            else:
                embedded = await stack.enter_async_context(EmbeddedBroker(free_port()))
                broker = BrokerAddress("127.0.0.1", embedded.port, tls=False)

            config = config_from_dict(
                demo_config(state_dir, pty_path, sim_config, broker, public_key_of(key))
            )
            daemon = Daemon(config)
            daemon_task = tasks.create_task(daemon.run(handle_signals=False), name="gateway")
            daemon_task.add_done_callback(lambda _: stop.set())
            if await _wait_ready(daemon, stop):
                console.print(
                    f"[bold]demo[/]: simulator on {pty_path}, broker {broker.host}:{broker.port}, "
                    f"cabinet {CABINET_ID}",
                    soft_wrap=True,
                )
                console.print(f"control socket: {config.control.socket}", soft_wrap=True)

                cloud = ScriptedCloud(
                    broker,
                    cabinet_id=CABINET_ID,
                    key=key,
                    key_id=KEY_ID,
                    on_message=stats.on_message,
                )
                # Left connected until the daemon has stopped, so that the summary counts the
                # results of ejects that finish during the daemon's shutdown.
                await stack.enter_async_context(cloud.connected())
                await _drive(options, cloud, daemon, stats, console, stop=stop)

            if daemon.runner.running_ejects:
                console.print(
                    _(
                        "Stopping: waiting for {count} running ejects to finish.",
                        count=daemon.runner.running_ejects,
                    ),
                    highlight=False,
                )
            daemon.stop()
            await daemon_task
            simulation.stop()
            await sim_task


async def _wait_ready(daemon: Daemon, stop: asyncio.Event) -> bool:
    """Wait until the daemon is ready or a stop is requested, and return whether it is ready.

    Raises TimeoutError when neither happens within READY_TIMEOUT_S.
    """
    waiters = [
        asyncio.create_task(daemon.ready.wait(), name="wait-ready"),
        asyncio.create_task(stop.wait(), name="wait-stop"),
    ]
    try:
        done, _pending = await asyncio.wait(
            waiters, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
    if not done:
        raise TimeoutError(f"the gateway was not ready within {READY_TIMEOUT_S:.0f} s")
    return daemon.ready.is_set() and not stop.is_set()


async def _drive(
    options: DemoOptions,
    cloud: ScriptedCloud,
    daemon: Daemon,
    stats: DemoStats,
    console: Console,
    *,
    stop: asyncio.Event,
) -> None:
    """Send rents and show the cabinet until the duration ends or `stop` is set."""
    started = time.monotonic()
    next_rent = started + 2.0
    live = Live(console=console, auto_refresh=False) if options.view else None
    with live if live is not None else contextlib.nullcontext():
        while options.duration_s is None or time.monotonic() - started < options.duration_s:
            if time.monotonic() >= next_rent:
                await cloud.send(EjectCommand(order_id=f"order-{stats.commands_sent + 1}"))
                stats.commands_sent += 1
                next_rent += options.rent_interval_s
            if live is not None:
                live.update(render(daemon, stats), refresh=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if stop.is_set():
                return


def render(daemon: Daemon, stats: DemoStats) -> Group:
    snapshot = daemon.bridge.snapshot()
    table = Table(title=_("Cabinet {cabinet}", cabinet=CABINET_ID), expand=False)
    for column in (_("Slot"), _("State"), _("Bank"), "SoC %", _("Temp.") + " °C", "SoH %"):
        table.add_column(column)
    for slot in snapshot.slots:
        table.add_row(
            str(slot.slot),
            names.slot_state(slot.state.value),
            slot.bank_id or "",
            "" if slot.charge is None else str(slot.charge),
            "" if slot.temperature_c is None else f"{slot.temperature_c:.1f}",
            "" if slot.health_pct is None else str(slot.health_pct),
        )
    stock = snapshot.stock
    summary = Text(
        _(
            "stock: {rentable} rentable, {charging} charging, {empty} empty, {faulted} faulted | "
            "rents sent {sent}, results {results} | returns {returns}",
            rentable=stock.rentable,
            charging=stock.charging,
            empty=stock.empty,
            faulted=stock.faulted,
            sent=stats.commands_sent,
            results=json.dumps(dict(stats.results)),
            returns=stats.events["bank_returned"],
        )
    )
    return Group(table, summary, Text("\n".join(stats.log)))
