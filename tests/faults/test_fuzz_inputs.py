"""Fuzzing the two inputs from outside: bytes from the slot boards and command payloads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import deque
from functools import partial
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import strategies as st

from cloud_link import sign_command
from cloud_link.commands import EjectCommand, RebirthCommand
from cloud_link.session import LinkStats
from firmware_bridge import BankReturned
from firmware_bridge.transport import ByteLink
from tests.faults.examples import draw_examples, example_count
from tests.faults.harness import fault_rig, poll_until, rentable_slot
from tests.faults.windows import WindowCounter
from tests.firmware_bridge.conftest import memory_rig
from tests.gateway.rig import CABINET, KEY_ID, WAIT_S
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

BATCH = 25
START_BYTE = 0xEA


class NoisyLink:
    """Wraps the bridge's line: hands out queued noise chunks as reads of their own."""

    def __init__(self, inner: ByteLink) -> None:
        self.inner = inner
        self.noise: deque[bytes] = deque()
        self.injected = 0

    @property
    def description(self) -> str:
        return self.inner.description

    async def read(self) -> bytes:
        if self.noise:
            self.injected += 1
            return self.noise.popleft()
        return await self.inner.read()

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    def close(self) -> None:
        self.inner.close()


def board_noise() -> st.SearchStrategy[bytes]:
    """Random bytes, bytes around the frame start byte, and long runs of it."""
    return st.one_of(
        st.binary(min_size=1, max_size=300),
        st.lists(st.sampled_from([START_BYTE, 0x00, 0xFF, 0x01, 0x7E]), min_size=1).map(bytes),
        st.builds(lambda n, tail: bytes([START_BYTE]) * n + tail, st.integers(1, 64), st.binary()),
    )


async def test_serial_noise_fuzz() -> None:
    """Invariant: random and start-byte-heavy noise between the boards' replies ends in no
    exception from the bridge, and the frames after it are still read: a return made after
    the noise is reported."""
    count = example_count(default=300, long=10_000)
    chunks = draw_examples(board_noise(), count, seed=8)
    links: list[NoisyLink] = []

    def wrap(inner: ByteLink) -> ByteLink:
        links.append(NoisyLink(inner))
        return links[-1]

    async with memory_rig(wrap=wrap) as rig:
        link = links[-1]
        for start in range(0, len(chunks), BATCH):
            link.noise.extend(chunks[start : start + BATCH])
            await poll_until(lambda: not link.noise)
        slot = rig.cabinet.free_slots()[0]
        rig.cabinet.insert_bank(slot, charge=90.0)
        returned = await rig.sink.wait_for(BankReturned, lambda e: e.slot == slot)
        stats = rig.bridge.stats()

    assert sum(link.injected for link in links) >= len(chunks)
    assert returned.identified
    assert stats.bytes_dropped > 0


def command_payloads(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON, and bit flips, cuts and splices of a valid signed command."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=30,
    )
    flipped = st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 7)).map(
        lambda spot: (
            valid[: spot[0]] + bytes([valid[spot[0]] ^ (1 << spot[1])]) + valid[spot[0] + 1 :]
        )
    )
    return st.one_of(
        st.binary(max_size=2000),
        json_values.map(lambda value: json.dumps(value).encode()),
        flipped,
        st.integers(0, len(valid)).map(lambda cut: valid[:cut]),
        st.binary(max_size=50).map(lambda junk: valid + junk),
    )


async def test_command_payload_fuzz(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: fuzzed payloads on the command topic raise no handler error, overflow nothing,
    move no lock, and leave the daemon serving: a genuine eject afterwards is taken."""
    count = example_count(default=300, long=10_000)
    async with fault_rig(mosquitto, tmp_path) as rig:
        assert rig.daemon is not None
        assert rig.daemon_task is not None
        cloud = rig.daemon.cloud
        # The signed base command is a rebirth: a mutation that still verifies cannot eject.
        valid = sign_command(
            rig.key,
            KEY_ID,
            cabinet_id=CABINET,
            command_id="cmd-fuzz-base",
            command=RebirthCommand(),
            lifetime_s=240,
        )
        payloads = draw_examples(command_payloads(valid), count, seed=8)
        windows = WindowCounter(rig.sim.cabinet)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as attacker:
            for start in range(0, len(payloads), BATCH):
                for payload in payloads[start : start + BATCH]:
                    await attacker.publish(rig.cloud.topics.command, payload, qos=1)
                sent = min(start + BATCH, len(payloads))
                async with asyncio.timeout(WAIT_S):
                    await cloud.wait_until(partial(all_settled, sent))
        counters = dataclasses.replace(cloud.stats().commands)  # a copy, not the live counters
        fuzz_windows = windows.total

        slot = await rentable_slot(rig)
        windows.take = True
        command_id = await rig.cloud.send(EjectCommand(slot=slot))
        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        alive = not rig.daemon_task.done()
        windows.close()

    assert counters.received == len(payloads)
    assert counters.handler_errors == 0
    assert counters.queue_overflows == 0
    assert counters.rejected + counters.rejections_suppressed > len(payloads) // 2
    assert fuzz_windows == 0
    assert alive
    assert result.eject.outcome == "taken"


def all_settled(sent: int, stats: LinkStats) -> bool:
    return settled(stats.commands) >= sent


def settled(counters: object) -> int:
    """Payloads the dispatcher has finished with, one way or another."""
    return sum(
        getattr(counters, name)
        for name in (
            "accepted",
            "rejected",
            "duplicates",
            "rejections_suppressed",
            "queue_overflows",
        )
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_fuzz_long_profile_loaded() -> None:
    """Invariant: with --long the fuzz tests above draw 10,000 examples each."""
    assert example_count(default=300, long=10_000) == 10_000
