"""The background WAL checkpointer: one per state file, and nothing left after cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from cloud_link import storage as storage_module
from cloud_link.storage import Storage, checkpoint_in_background
from tests.gateway.rig import running_rig
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

WAIT_S = 5.0
CHECKPOINT_THREAD_PREFIX = "sqlite-checkpoint"


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(CHECKPOINT_THREAD_PREFIX)]


async def test_daemon_checkpoints_state_file_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The cloud link and the gateway store share one file, so one checkpointer is enough."""
    async with running_rig(mosquitto, tmp_path) as rig:
        assert rig.daemon is not None
        assert rig.daemon.store.path == rig.daemon.cloud._storage.path
        checkpointers = [
            task
            for task in asyncio.all_tasks()
            if task.get_coro().__qualname__ == checkpoint_in_background.__qualname__
        ]

    assert len(checkpointers) == 1, f"{len(checkpointers)} checkpointers for one state file"


async def test_cancelled_checkpointer_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpointer cancelled during a checkpoint (daemon shutdown) has stopped on return."""
    path = tmp_path / "db.sqlite"
    storage = Storage(path)
    storage.conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    with storage.transaction(durable=True) as conn:
        conn.executemany("INSERT INTO item (body) VALUES (?)", [("x" * 1000,)] * 100)

    # The real PASSIVE checkpoint, held until the test has cancelled the task.
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    proceed = threading.Event()
    real_checkpoint = storage_module._checkpoint_passive

    def gated_checkpoint(path: Path, opened: list[sqlite3.Connection]) -> tuple[int, int, int]:
        loop.call_soon_threadsafe(started.set)
        proceed.wait(WAIT_S)
        return real_checkpoint(path, opened)

    monkeypatch.setattr(storage_module, "_checkpoint_passive", gated_checkpoint)
    task = asyncio.create_task(checkpoint_in_background(path, 0.0))
    try:
        async with asyncio.timeout(WAIT_S):
            await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        left = [t for t in checkpoint_threads() if t.is_alive()]
    finally:
        proceed.set()
        for thread in checkpoint_threads():
            thread.join(WAIT_S)
        storage.close()

    assert left == [], "the checkpoint thread and its connection outlive the cancelled task"
