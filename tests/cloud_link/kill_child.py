"""Child process for the kill -9 test: runs a link and reports each committed sequence number.

Usage: python -m tests.cloud_link.kill_child CONFIG_JSON STATE_DIR MODE COUNT
MODE `publish` sends COUNT events as fast as it can and prints `seq N` after each commit.
MODE `drain` waits for the outbox to empty, sends COUNT more events, waits again and prints
`drained` before a clean stop.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from cloud_link import (
    DATABASE_NAME,
    AcceptedCommand,
    CloudConfig,
    CloudLink,
    CommandOutcome,
    CommandStatus,
    FaultEvent,
)
from protocol.cabinet import FaultKind
from tests.cloud_link.conftest import sample_birth


async def reject_all(command: AcceptedCommand) -> CommandOutcome:
    return CommandOutcome(status=CommandStatus.FAILED, detail="kill test child")


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(config_json: str, state_dir: Path, mode: str, count: int) -> None:
    config = CloudConfig.model_validate_json(config_json)
    link = CloudLink(
        config,
        database=state_dir / DATABASE_NAME,
        handler=reject_all,
        birth_provider=sample_birth,
    )
    runner = asyncio.create_task(link.run())
    await link.wait_connected()
    report("connected")

    if mode == "drain":
        await link.wait_until(lambda stats: stats.outbox.pending == 0)
    for index in range(count):
        seq = link.send(FaultEvent(fault=FaultKind.OVERHEAT, slot=index % 8 + 1))
        report(f"seq {seq}")
        await asyncio.sleep(0)  # let the publisher run between sends
    await link.wait_until(lambda stats: stats.outbox.pending == 0)
    report("drained")

    link.stop()
    await runner
    link.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
