"""kill -9 of the daemon process at random moments while rents and returns are in flight."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console

from cabinet_sim import SimConfig
from cabinet_sim.runtime import RunOptions, Simulation
from cloud_link.commands import EjectCommand
from gateway.cloudtool import BrokerAddress, ScriptedCloud, public_key_of
from tests.faults.processes import DaemonForker, toml_text
from tests.faults.windows import WindowCounter
from tests.gateway.rig import CABINET, KEY_ID, Inbox
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

WAIT_S = 30.0
FINAL_WAIT_S = 45.0
MAX_ACTIONS_PER_TRIAL = 3
MAX_KILL_DELAY_S = 0.8
COMMAND_LIFETIME_S = 240.0


@dataclass
class KillRun:
    sim: Simulation
    cloud: ScriptedCloud
    inbox: Inbox
    windows: WindowCounter
    forker: DaemonForker
    config_path: Path
    log_path: Path
    rng: random.Random
    commands: list[str] = field(default_factory=list)
    inserted: int = 0

    async def start_daemon(self) -> int:
        """Fork a daemon and return its pid once it published a new birth."""
        births = len(self.inbox.of_kind("birth"))
        pid = await self.forker.spawn(self.config_path, self.log_path)
        await self.inbox.wait_count("birth", births + 1, within_s=WAIT_S)
        return pid

    async def act(self) -> None:
        """Do a few random rents and returns, as users and the cloud would."""
        cabinet = self.sim.cabinet
        for _ in range(self.rng.randint(1, MAX_ACTIONS_PER_TRIAL)):
            free = cabinet.free_slots()
            if free and self.rng.random() < 0.5:
                slot = self.rng.choice(free)
                cabinet.insert_bank(slot, charge=95.0)
                self.inserted += 1
            else:
                occupied = [s for s in range(1, cabinet.slot_count + 1) if s not in free]
                target = self.rng.choice(occupied) if occupied else None
                command = EjectCommand(slot=target)
                self.commands.append(await self.cloud.send(command, lifetime_s=COMMAND_LIFETIME_S))

    def distinct_returns(self) -> Counter[tuple[int, str | None]]:
        seen = {m.seq: m.data for m in self.inbox.messages if m.data.kind == "bank_returned"}
        return Counter((data.slot, data.bank_id) for data in seen.values())

    def results_by_command(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {command_id: [] for command_id in self.commands}
        for result in self.inbox.of_kind("command_result"):
            if result.command_id in found:
                found[result.command_id].append(result)
        return found

    def settled(self) -> bool:
        returned = sum(self.distinct_returns().values()) >= len(self.windows.returns)
        return returned and all(self.results_by_command().values())


@contextlib.asynccontextmanager
async def kill_run(broker: MosquittoBroker, tmp_path: Path, seed: int) -> AsyncIterator[KillRun]:
    sim = Simulation(
        RunOptions(
            config=SimConfig(boards=2, slots_per_board=4, seed=seed),
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
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(
            toml_text(daemon_config(broker, tmp_path, pty_path, sim, public_key_of(key))),
            encoding="utf-8",
        )
        forker = await DaemonForker.start()
        windows = WindowCounter(sim.cabinet, take=True)
        try:
            async with cloud.connected():
                yield KillRun(
                    sim,
                    cloud,
                    inbox,
                    windows,
                    forker,
                    config_path,
                    tmp_path / "daemon.log",
                    random.Random(seed),
                )
        finally:
            windows.close()
            await forker.close()
            sim.stop()
            await sim_task


def daemon_config(
    broker: MosquittoBroker, tmp_path: Path, pty_path: str, sim: Simulation, public_key: str
) -> dict[str, Any]:
    sim_config = sim.options.config
    return {
        "cabinet": {
            "id": CABINET,
            "state_dir": str(tmp_path / "state"),
            "shutdown_eject_wait_s": 5,
        },
        "serial": {
            "port": pty_path,
            "unlock_window_s": 3,
            "status_interval_s": 1.0,
            "boards": [
                {"address": address, "slot_count": sim_config.slots_per_board}
                for address in sim_config.board_addresses()
            ],
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "mqtt_version": "5",
            "will_delay_s": 0,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "tls": {"enabled": False},
            "commands": {
                "clock_sync": "synchronised",
                "max_lifetime_s": 300,
                "trusted_keys": {KEY_ID: public_key},
            },
        },
        "control": {"socket": str(tmp_path / "control.sock")},
        "log": {"level": "INFO"},
    }


async def kill_trials(broker: MosquittoBroker, tmp_path: Path, trials: int, seed: int) -> None:
    async with kill_run(broker, tmp_path, seed) as run:
        for _ in range(trials):
            pid = await run.start_daemon()
            await run.act()
            await asyncio.sleep(run.rng.uniform(0.0, MAX_KILL_DELAY_S))  # the random kill moment
            assert await run.forker.kill(pid) == -signal.SIGKILL

        pid = await run.start_daemon()
        # On a timeout the asserts below name what is missing.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_WAIT_S):
                while not run.settled():
                    run.inbox.changed.clear()
                    await run.inbox.changed.wait()
        assert await run.forker.terminate(pid) == 0

        results = run.results_by_command()
        finals = {
            command_id: {(r.status, r.eject.outcome if r.eject else None) for r in found}
            for command_id, found in results.items()
        }
        acted_twice = {token: n for token, n in run.windows.by_token.items() if n > 1}
        taken = [c for c, outcomes in finals.items() if ("succeeded", "taken") in outcomes]

    assert {c: found for c, found in results.items() if not found} == {}
    assert run.inserted > 0
    assert len(run.windows.returns) > 0
    assert run.windows.dropped_events == 0
    assert len(run.commands) > 0
    assert run.distinct_returns() == Counter(run.windows.returns)
    assert acted_twice == {}
    assert run.windows.total <= len(run.commands)
    assert {c: f for c, f in finals.items() if len(f) != 1} == {}
    assert len(taken) <= run.windows.total


async def test_kill9_daemon_loses_nothing(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: after 50 kill -9 trials, every return arrives once per seq, no eject acts
    twice, and every command has exactly one final result."""
    await kill_trials(mosquitto, tmp_path, trials=50, seed=8)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_kill9_daemon_soak(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: as above, over 300 kill -9 trials with another seed."""
    await kill_trials(mosquitto, tmp_path, trials=300, seed=1008)
