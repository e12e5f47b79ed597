"""Sequence numbers continue without a gap and never repeat after a kill -9 and a reopen.

A child process runs one path that deletes or moves outbox rows, or stores none, on a real
SQLite file and kills itself with SIGKILL. The test reopens the file and appends again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from cloud_link import FaultEvent
from protocol.cabinet import FaultKind
from tests.cloud_link.outbox_child import SCENARIOS, open_outbox

ROOT = Path(__file__).parents[2]
CHILD_TIMEOUT_S = 30.0


async def run_child(database: Path, scenario: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cloud_link.outbox_child",
        str(database),
        scenario,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    async with asyncio.timeout(CHILD_TIMEOUT_S):
        output, _ = await process.communicate()
    assert process.returncode == -signal.SIGKILL, f"child exited with {process.returncode}"
    return output.decode().split("\n")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_sequence_continues_after_kill(tmp_path: Path, scenario: str) -> None:
    database = tmp_path / "outbox.sqlite"
    lines = await run_child(database, scenario)
    before = [int(line.split()[1]) for line in lines if line.startswith("seq ")]

    outbox = open_outbox(database, scenario)
    after = [
        outbox.enqueue(FaultEvent(fault=FaultKind.TAMPER, slot=n), topic="t", offline=False)
        for n in (1, 2)
    ]

    assert "done" in lines
    assert before == list(range(1, len(before) + 1))
    assert after == [len(before) + 1, len(before) + 2]
    assert outbox.last_seq() == len(before) + 2
