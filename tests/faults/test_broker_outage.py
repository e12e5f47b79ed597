"""The broker killed, frozen past the keepalive, or gone through a long outage."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cloud_link.messages import AnyEnvelope
from protocol.cabinet import LinkState
from protocol.slotbus.codes import LockState
from tests.faults.harness import fault_rig, wait_daemon
from tests.gateway.rig import WAIT_S, Rig
from tests.support.mosquitto import BrokerFactory, MosquittoBroker

pytestmark = pytest.mark.faults

TRANSACTIONAL = frozenset({"bank_returned", "fault", "eject_outcome", "low_stock"})
DRAIN_WAIT_S = 60.0
KEEPALIVE_S = 5
# Faster retries than production, so that a test waits seconds, not the documented 30 s.
OVERRIDES: dict[str, Any] = {
    "mqtt": {
        "keepalive_s": KEEPALIVE_S,
        "outbox": {"no_subscriber_retry_s": 0.5},
    }
}


def transactional(messages: list[AnyEnvelope]) -> list[AnyEnvelope]:
    """Transactional messages deduplicated on seq, in the order of their first arrival."""
    seen: dict[int, AnyEnvelope] = {}
    for message in messages:
        if message.data.kind in TRANSACTIONAL and message.seq not in seen:
            seen[message.seq] = message
    return list(seen.values())


async def make_returns(rig: Rig, count: int) -> list[int]:
    """Return banks into `count` free slots and wait until the daemon committed each one."""
    assert rig.daemon is not None
    daemon = rig.daemon
    slots = rig.sim.cabinet.free_slots()[:count]
    for slot in slots:
        before = returns_in(daemon, slot)
        rig.sim.cabinet.insert_bank(slot, charge=90.0)
        await wait_daemon(rig, partial(more_returns, daemon, slot, before))
    return slots


def more_returns(daemon: Any, slot: int, before: int) -> bool:
    return returns_in(daemon, slot) > before


def returns_in(daemon: Any, slot: int) -> int:
    return sum(1 for e in daemon.feed.recent(500) if e.kind == "bank_returned" and e.slot == slot)


async def retained_status(broker: MosquittoBroker, topic: str) -> dict[str, Any]:
    """Read the retained status as a backend that connects only now would."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(WAIT_S):
            async for message in client.messages:
                if message.retain:
                    payload = message.payload
                    assert isinstance(payload, bytes | bytearray)
                    status: dict[str, Any] = json.loads(payload)
                    return status
    raise AssertionError("no retained status")


async def wait_offline(rig: Rig, within_s: float = WAIT_S) -> None:
    assert rig.daemon is not None
    async with asyncio.timeout(within_s):
        await rig.daemon.cloud.wait_until(lambda stats: stats.link is LinkState.OFFLINE)


async def wait_drained(rig: Rig, slots: list[int]) -> None:
    assert rig.daemon is not None
    cloud = rig.daemon.cloud
    await rig.inbox.wait_count(
        "bank_returned", len(slots), lambda e: e.slot in slots, within_s=DRAIN_WAIT_S
    )
    # Connected, not necessarily ONLINE: a link that lost its broker within the flap window
    # reports DEGRADED (see test_link_online_after_one_flap).
    async with asyncio.timeout(DRAIN_WAIT_S):
        await cloud.wait_until(lambda s: s.link is not LinkState.OFFLINE and s.outbox.pending == 0)


def check_delivery(rig: Rig, slots: list[int], committed: int) -> None:
    delivered = transactional(rig.inbox.messages)
    returns = [m.data for m in delivered if m.data.kind == "bank_returned"]
    seqs = [m.seq for m in delivered]
    assert [getattr(data, "slot", None) for data in returns if data.slot in slots] == slots
    assert seqs == sorted(seqs)
    assert len(delivered) >= committed


async def test_broker_killed_and_restarted(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Invariant: returns made while the broker is dead (SIGKILL) all arrive after its restart,
    in seq order, the outbox drains to zero and the retained status is online again."""
    broker = mosquitto_factory(persistence=True)
    async with fault_rig(broker, tmp_path, overrides=OVERRIDES) as rig:
        await rig.inbox.wait_for("birth")
        broker.kill()
        await wait_offline(rig)
        slots = await make_returns(rig, 3)
        assert rig.daemon is not None
        committed = rig.daemon.cloud.outbox.stats().pending
        broker.start()
        await wait_drained(rig, slots)
        status = await retained_status(broker, f"{rig.cloud.topics.base}/status")

    assert committed >= len(slots)
    check_delivery(rig, slots, len(slots))
    assert status["state"] == "online"


async def test_broker_frozen_past_keepalive(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Invariant: a broker frozen with SIGSTOP for longer than the keepalive is detected as
    lost. Returns made meanwhile arrive in order after SIGCONT, and the cabinet is online."""
    broker = mosquitto_factory(persistence=True)
    async with fault_rig(broker, tmp_path, overrides=OVERRIDES) as rig:
        await rig.inbox.wait_for("birth")
        broker.pause()
        slots = await make_returns(rig, 2)
        await wait_offline(rig, within_s=KEEPALIVE_S * 4)
        broker.resume()
        await wait_drained(rig, slots)
        status = await retained_status(broker, f"{rig.cloud.topics.base}/status")

    check_delivery(rig, slots, len(slots))
    assert status["state"] == "online"


async def test_long_outage_backlog_drained(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Invariant: through a long outage with many returns, removals and faults, every
    transactional message is kept and delivered once per seq in order, telemetry never
    crowds it out, and the backlog drains to zero."""
    broker = mosquitto_factory(persistence=True)
    async with fault_rig(broker, tmp_path, overrides=OVERRIDES) as rig:
        assert rig.daemon is not None
        daemon = rig.daemon
        await rig.inbox.wait_for("birth")
        broker.stop()
        await wait_offline(rig)
        all_slots: list[int] = []
        for _ in range(5):
            slots = await make_returns(rig, 2)
            all_slots.extend(slots)
            for slot in slots:
                pull_out(rig, slot)
                await wait_daemon(rig, partial(slot_empty, daemon, slot))
        committed = len(transactional_pending(daemon))
        broker.start()
        await wait_drained(rig, all_slots)
        status = await retained_status(broker, f"{rig.cloud.topics.base}/status")
        dead_letters = daemon.cloud.outbox.stats().dead_letters

    check_delivery(rig, all_slots, committed)
    assert dead_letters == 0
    assert status["state"] == "online"


def slot_empty(daemon: Any, slot: int) -> bool:
    return not daemon.bridge.snapshot().slots[slot - 1].bank_id


def pull_out(rig: Rig, slot: int) -> None:
    """Pull a bank out without an eject: forced open (a tamper fault) unless already open."""
    cabinet = rig.sim.cabinet
    if cabinet.slot(slot).lock is LockState.OPEN:
        cabinet.remove_bank(slot)
    else:
        cabinet.tamper(slot)


def transactional_pending(daemon: Any) -> list[Any]:
    return [e for e in daemon.feed.recent(500) if e.kind in ("bank_returned", "fault")]


async def test_link_online_after_one_flap(mosquitto_factory: BrokerFactory, tmp_path: Path) -> None:
    """Invariant: one broker loss within the flap window, followed by a connection that stays
    up for longer than that window, leaves the link ONLINE, not DEGRADED."""
    broker = mosquitto_factory(persistence=True)
    window_s = 1.0
    overrides = {"mqtt": {**OVERRIDES["mqtt"], "flap_window_s": window_s}}
    async with fault_rig(broker, tmp_path, overrides=overrides) as rig:
        assert rig.daemon is not None
        cloud = rig.daemon.cloud
        await rig.inbox.wait_for("birth")
        broker.kill()
        await wait_offline(rig)
        broker.start()
        async with asyncio.timeout(WAIT_S):
            await cloud.wait_until(lambda s: s.link is not LinkState.OFFLINE)
        connects = cloud.stats().connects
        flaps = cloud.stats().flaps
        await asyncio.sleep(window_s * 3)  # the connection must outlast the flap window
        stats = cloud.stats()

    assert flaps == 1
    assert stats.connects == connects
    assert stats.link is LinkState.ONLINE
