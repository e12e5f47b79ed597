"""No loss when the gateway process is killed with SIGKILL while it publishes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_link import parse_message
from cloud_link.session import DATABASE_NAME
from tests.cloud_link.conftest import (
    CABINET,
    WAIT_S,
    Observer,
    make_config,
    observe,
    payload_bytes,
)
from tests.support.mosquitto import MosquittoBroker

ROOT = Path(__file__).parents[2]


async def start_child(
    config_json: str, state_dir: Path, mode: str, count: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cloud_link.kill_child",
        config_json,
        str(state_dir),
        mode,
        str(count),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(WAIT_S):
        line = await process.stdout.readline()
    if not line:
        raise AssertionError(f"child exited early with code {await process.wait()}")
    return line.decode().strip()


async def committed_until(process: asyncio.subprocess.Process, stop_after: int) -> list[int]:
    """Read `seq N` lines until `stop_after` commits were reported."""
    seqs: list[int] = []
    while len(seqs) < stop_after:
        line = await read_line(process)
        if line.startswith("seq "):
            seqs.append(int(line.split()[1]))
    return seqs


def count_outbox_rows(state_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(state_dir / DATABASE_NAME)) as db:
        count: int = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return count


async def received_events(backend: Observer, wanted: set[int]) -> set[int]:
    seen: set[int] = set()
    while not wanted <= seen:
        message = parse_message(payload_bytes(await backend.next_on("/event/fault")))
        seen.add(message.seq)
    return seen


async def kill_while_publishing(
    mosquitto: MosquittoBroker, tmp_path: Path, total: int, kill_after: int
) -> None:
    config = make_config(mosquitto, Ed25519PrivateKey.generate(), will_delay_s=0)
    config_json = config.model_dump_json()
    state_dir = tmp_path / "state"
    async with (
        observe(mosquitto) as backend,
        observe(mosquitto, f"cabinets/{CABINET}/status") as status,
    ):
        child = await start_child(config_json, state_dir, "publish", total)
        assert await read_line(child) == "connected"
        before_kill = await committed_until(child, kill_after)
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        pending_at_kill = count_outbox_rows(state_dir)

        # The broker publishes the will once it detects the closed socket.
        while True:
            message = await status.next_on("/status")
            will = json.loads(payload_bytes(message))
            # A retained status is from before this process; only a live one is the will.
            if will["state"] == "offline" and not message.retain:
                break

        restarted = await start_child(config_json, state_dir, "drain", 5)
        assert await read_line(restarted) == "connected"
        after_restart = await committed_until(restarted, 5)
        assert await read_line(restarted) == "drained"
        assert await restarted.wait() == 0
        seen = await received_events(backend, set(before_kill) | set(after_restart))

    assert pending_at_kill > 0, "the kill came after everything was published"
    assert will["reason"] == "connection_lost"
    assert set(before_kill) <= seen
    assert min(after_restart) > max(before_kill)
    assert len(set(after_restart)) == 5


async def test_kill9_loses_nothing(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    await kill_while_publishing(mosquitto, tmp_path, total=2000, kill_after=300)


@pytest.mark.slow
async def test_kill9_loses_nothing_repeatedly(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    for round_number in range(10):
        await kill_while_publishing(mosquitto, tmp_path / str(round_number), 5000, 1000)
