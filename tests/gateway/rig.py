"""End-to-end rig: the simulator on a real pseudo-terminal, a real Mosquitto, the daemon, a cloud.

Everything runs in the test's event loop except Mosquitto. The daemon can be stopped
abruptly (its task cancelled, as a crash would leave the database) and started again on the
same state directory while the simulator keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console

from cabinet_sim import SimConfig
from cabinet_sim.runtime import RunOptions, Simulation
from cloud_link.messages import AnyEnvelope
from gateway.cloudtool import BrokerAddress, ReceivedMessage, ScriptedCloud, public_key_of
from gateway.config import GatewayConfig, config_from_dict
from gateway.daemon import Daemon
from tests.support.mosquitto import MosquittoBroker

CABINET = "E2E-0001"
KEY_ID = "e2e-key"
WAIT_S = 20.0


@dataclass
class Inbox:
    """Every message the cloud received, with a way to wait for one."""

    messages: list[AnyEnvelope] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def receive(self, message: ReceivedMessage) -> None:
        if message.envelope is not None:
            self.messages.append(message.envelope)
        elif message.topic.endswith("/status"):
            self.statuses.append(message.raw.decode(errors="replace"))
        self.changed.set()

    def of_kind(self, kind: str) -> list[Any]:
        return [envelope.data for envelope in self.messages if envelope.data.kind == kind]

    async def wait_for(
        self, kind: str, match: Callable[[Any], bool] = lambda _: True, within_s: float = WAIT_S
    ) -> Any:
        """Return the first message of `kind` that matches, waiting for it if needed."""
        async with asyncio.timeout(within_s):
            while True:
                for data in self.of_kind(kind):
                    if match(data):
                        return data
                self.changed.clear()
                await self.changed.wait()

    async def wait_count(
        self,
        kind: str,
        count: int,
        match: Callable[[Any], bool] = lambda _: True,
        within_s: float = WAIT_S,
    ) -> list[Any]:
        """Return the messages of `kind` that match once there are at least `count` of them."""
        async with asyncio.timeout(within_s):
            while len(found := [d for d in self.of_kind(kind) if match(d)]) < count:
                self.changed.clear()
                await self.changed.wait()
        return found

    async def wait_status(self, text: str, within_s: float = WAIT_S) -> None:
        async with asyncio.timeout(within_s):
            while not any(text in status for status in self.statuses):
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Rig:
    sim: Simulation
    broker: MosquittoBroker
    state_dir: Path
    pty_path: str
    key: Ed25519PrivateKey
    inbox: Inbox
    cloud: ScriptedCloud
    overrides: dict[str, Any]
    daemon: Daemon | None = None
    daemon_task: asyncio.Task[None] | None = None

    def config(self) -> GatewayConfig:
        sim_config = self.sim.options.config
        data: dict[str, Any] = {
            "cabinet": {"id": CABINET, "state_dir": str(self.state_dir), "low_stock_threshold": 1},
            "serial": {
                "port": self.pty_path,
                "boards": [
                    {"address": address, "slot_count": sim_config.slots_per_board}
                    for address in sim_config.board_addresses()
                ],
                "unlock_window_s": 3,
                "status_interval_s": 1.0,
            },
            "mqtt": {
                "host": "127.0.0.1",
                "port": self.broker.port,
                "mqtt_version": "5",
                "tls": {"enabled": False},
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
                "commands": {
                    "trusted_keys": {KEY_ID: public_key_of(self.key)},
                    "clock_sync": "synchronised",
                },
            },
            "control": {"socket": str(self.state_dir / "control.sock")},
        }
        for section, values in self.overrides.items():
            data.setdefault(section, {}).update(values)
        return config_from_dict(data)

    async def start_daemon(self) -> Daemon:
        daemon = Daemon(self.config())
        self.daemon = daemon
        self.daemon_task = asyncio.create_task(daemon.run(), name="daemon-under-test")
        ready = asyncio.create_task(daemon.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self.daemon_task}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if self.daemon_task in done:
            ready.cancel()
            self.daemon_task.result()  # raises the daemon's startup error
        if ready not in done:
            ready.cancel()
            raise TimeoutError("daemon not ready")
        return daemon

    async def stop_daemon(self) -> None:
        """Stop gracefully, as on SIGTERM."""
        if self.daemon is None or self.daemon_task is None:
            return
        self.daemon.stop()
        await asyncio.wait_for(self.daemon_task, WAIT_S)
        self.daemon = self.daemon_task = None

    async def crash_daemon(self) -> None:
        """Cancel the daemon without a graceful stop: running commands stay unfinished."""
        if self.daemon_task is None:
            return
        self.daemon_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.daemon_task
        self.daemon = self.daemon_task = None


@contextlib.asynccontextmanager
async def running_rig(
    broker: MosquittoBroker,
    tmp_path: Path,
    *,
    sim_config: SimConfig | None = None,
    overrides: dict[str, Any] | None = None,
    protocol: str = "native",
) -> AsyncIterator[Rig]:
    """`protocol` sets the simulator's wire protocol and the daemon's `serial.protocol`."""
    if sim_config is None:
        sim_config = SimConfig.model_validate(
            {"boards": 2, "slots_per_board": 4, "seed": 7, "protocol": protocol}
        )
    if protocol != "native":
        overrides = dict(overrides or {})
        overrides["serial"] = {"protocol": protocol, **overrides.get("serial", {})}
    sim = Simulation(
        RunOptions(
            config=sim_config,
            pty=True,
            view=False,
            stdin=False,
        ),
        Console(quiet=True),
    )
    key = Ed25519PrivateKey.generate()
    inbox = Inbox()
    cloud = ScriptedCloud(
        BrokerAddress("127.0.0.1", broker.port, tls=False),
        cabinet_id=CABINET,
        key=key,
        key_id=KEY_ID,
        mqtt_version="5",
        on_message=inbox.receive,
    )
    async with asyncio.TaskGroup() as tasks:
        endpoints: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        sim_task = tasks.create_task(sim.run(endpoints.set_result))
        pty_path = (await asyncio.wait_for(endpoints, WAIT_S))[0]
        rig = Rig(sim, broker, tmp_path / "state", pty_path, key, inbox, cloud, overrides or {})
        async with cloud.connected():
            try:
                await rig.start_daemon()
                yield rig
            finally:
                await rig.stop_daemon()
        sim.stop()
        await sim_task
