"""Forged, replayed, stale and malformed commands through the running daemon: none moves a lock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_link import sign_command
from cloud_link.commands import EjectCommand
from tests.faults.harness import rentable_slot
from tests.faults.windows import WindowCounter
from tests.gateway.rig import CABINET, KEY_ID, Rig, running_rig
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.faults

MAX_PAYLOAD_BYTES = 8192  # CommandSettings.max_payload_bytes default
MAX_JSON_DEPTH = 12  # CommandSettings.max_json_depth default


def signed_eject(
    key: Ed25519PrivateKey,
    key_id: str,
    slot: int,
    *,
    command_id: str,
    lifetime_s: float = 60.0,
    issued_at: datetime | None = None,
) -> bytes:
    return sign_command(
        key,
        key_id,
        cabinet_id=CABINET,
        command_id=command_id,
        command=EjectCommand(slot=slot),
        lifetime_s=lifetime_s,
        issued_at=issued_at,
    )


async def publish_raw(rig: Rig, payload: bytes) -> None:
    """Publish bytes on the command topic as an attacker with broker access would."""
    async with aiomqtt.Client("127.0.0.1", rig.broker.port) as client:
        await client.publish(rig.cloud.topics.command, payload, qos=1)


def attacks(rig: Rig, slot: int) -> list[tuple[str, bytes, str, str | None]]:
    """Each case: name, payload, expected reject reason, expected security event or None."""
    now = datetime.now(UTC)
    forger = Ed25519PrivateKey.generate()
    genuine = json.loads(signed_eject(rig.key, KEY_ID, slot, command_id="cmd-genuine"))
    tampered_body = genuine["body"].replace(f'"slot":{slot}', f'"slot":{slot},"order_id":"x"')
    deep = "[" * (MAX_JSON_DEPTH * 4) + "]" * (MAX_JSON_DEPTH * 4)
    return [
        (
            "forged signature",
            signed_eject(forger, KEY_ID, slot, command_id="cmd-forged"),
            "bad_signature",
            "bad_signature",
        ),
        (
            "tampered body",
            json.dumps({**genuine, "body": tampered_body}).encode(),
            "bad_signature",
            "bad_signature",
        ),
        (
            "unknown key id",
            signed_eject(forger, "attacker-key", slot, command_id="cmd-unknown-key"),
            "unknown_key",
            "unknown_key",
        ),
        (
            "missing signature",
            json.dumps({**genuine, "sig": ""}).encode(),
            "missing_signature",
            "missing_signature",
        ),
        (
            "stale deadline",
            signed_eject(
                rig.key,
                KEY_ID,
                slot,
                command_id="cmd-stale",
                issued_at=now - timedelta(seconds=120),
            ),
            "expired",
            "invalid_deadline",
        ),
        (
            "far-future deadline",
            signed_eject(rig.key, KEY_ID, slot, command_id="cmd-far", lifetime_s=86_400),
            "deadline_too_far",
            "invalid_deadline",
        ),
        (
            "issued in the future",
            signed_eject(
                rig.key,
                KEY_ID,
                slot,
                command_id="cmd-future",
                issued_at=now + timedelta(hours=1),
            ),
            "issued_in_future",
            "invalid_deadline",
        ),
        (
            "oversized payload",
            json.dumps({**genuine, "pad": "x" * MAX_PAYLOAD_BYTES}).encode(),
            "too_large",
            "malformed_command",
        ),
        (
            "invalid UTF-8",
            b'{"key_id":"\xff\xfe","body":"{}","sig":"AA=="}',
            "invalid_utf8",
            "malformed_command",
        ),
        ("deeply nested JSON", deep.encode(), "too_deep", "malformed_command"),
    ]


async def test_attacks_never_move_lock(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: forged, unknown-key, unsigned, stale, far-future, oversized, invalid UTF-8
    and too-deep commands each get one rejection result and one security event, and no take
    window opens."""
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = await rentable_slot(rig)
        windows = WindowCounter(rig.sim.cabinet)
        outcomes: dict[str, str | None] = {}
        for count, (name, payload, _, _) in enumerate(attacks(rig, slot), start=1):
            await publish_raw(rig, payload)
            found = await rig.inbox.wait_count(
                "command_result", count, lambda r: r.status == "rejected"
            )
            outcomes[name] = found[-1].reject_reason
        # A genuine command afterwards proves the slot could have opened all along.
        command_id = await rig.cloud.send(EjectCommand(slot=slot))
        await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        security = [event.event for event in rig.inbox.of_kind("security")]
        windows.close()

    cases = attacks(rig, slot)
    assert outcomes == {name: reason for name, _, reason, _ in cases}
    assert sorted(security) == sorted(event for _, _, _, event in cases if event is not None)
    assert windows.slots == [slot]


async def test_replayed_command_acts_once(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Invariant: the same signed bytes published again get the stored result and open no
    second take window (nothing acts twice on a replay)."""
    async with running_rig(mosquitto, tmp_path) as rig:
        slot = await rentable_slot(rig)
        windows = WindowCounter(rig.sim.cabinet, take=True)
        payload = signed_eject(rig.key, KEY_ID, slot, command_id="cmd-replayed")
        await publish_raw(rig, payload)
        first = await rig.inbox.wait_for("command_result", lambda r: r.command_id == "cmd-replayed")
        for _ in range(3):
            await publish_raw(rig, payload)
        results = await rig.inbox.wait_count(
            "command_result", 4, lambda r: r.command_id == "cmd-replayed"
        )
        windows.close()

    assert first.eject.outcome == "taken"
    assert {(r.status, r.eject.outcome) for r in results} == {("succeeded", "taken")}
    assert windows.total == 1
    assert len(rig.inbox.of_kind("eject_outcome")) == 1
