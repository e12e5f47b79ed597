"""Fuzzed payloads on the command topic of a running link: each gets a rejection, none acts."""

from __future__ import annotations

import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_link import CommandRejectReason, CommandResult, CommandStatus, EjectCommand
from tests.cloud_link.conftest import (
    CABINET,
    LinkFactory,
    RecordingHandler,
    command_payload,
    observe,
    result_of,
    running,
)
from tests.support.mosquitto import MosquittoBroker

COMMAND_TOPIC = f"cabinets/{CABINET}/cmd"


def mutations(valid: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Return `count` corrupted variants of a valid signed payload."""
    document = json.loads(valid)
    makers = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))),
        lambda: valid[: rng.randint(0, len(valid) - 1)],
        lambda: flip_byte(valid, rng),
        lambda: b"[" * rng.randint(20, 5000) + b"]" * rng.randint(0, 20),
        lambda: b'{"a":' * rng.randint(13, 200) + b"1" + b"}" * 5,
        lambda: json.dumps({**document, "sig": document["sig"][::-1]}).encode(),
        lambda: json.dumps({**document, "body": document["body"] + " "}).encode(),
        lambda: json.dumps({**document, "key_id": rng.choice(["", "x" * 100, "k"])}).encode(),
        lambda: json.dumps(rng.choice([None, 1, "text", [], {}, {"body": 5}])).encode(),
        lambda: valid.replace(b'"', b"'", rng.randint(1, 5)),
        lambda: b"\xc3\x28" + valid,
        lambda: b"{" + b" " * 10_000 + b"}",
    ]
    return [rng.choice(makers)() for _ in range(count)]


def flip_byte(payload: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(payload))
    return (
        payload[:index] + bytes([payload[index] ^ (1 << rng.randrange(8))]) + payload[index + 1 :]
    )


async def fuzz_link(
    *,
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
    count: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    valid = command_payload(signing_key, EjectCommand(slot=1), command_id="fuzz-base")
    link = make_link(commands={"max_rejections_per_minute": count + 10})
    reasons: set[CommandRejectReason] = set()
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        for payload in mutations(valid, rng, count):
            await backend.publish(COMMAND_TOPIC, payload)
            result = result_of(await backend.next_on("/cmd/result"))
            assert result.status is CommandStatus.REJECTED, f"payload {payload[:80]!r} acted"
            assert result.reject_reason is not None
            reasons.add(result.reject_reason)
        await backend.publish(COMMAND_TOPIC, valid)
        final = result_of(await backend.next_on("/cmd/result"))

    assert handler.calls[0].command_id == "fuzz-base"
    assert len(handler.calls) == 1
    assert final.status is CommandStatus.SUCCEEDED
    assert {CommandRejectReason.INVALID_JSON, CommandRejectReason.BAD_SIGNATURE} <= reasons


async def test_fuzzed_commands_rejected(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    await fuzz_link(
        mosquitto=mosquitto,
        make_link=make_link,
        handler=handler,
        signing_key=signing_key,
        count=400,
        seed=5,
    )


@pytest.mark.slow
async def test_fuzzed_commands_rejected_long(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    await fuzz_link(
        mosquitto=mosquitto,
        make_link=make_link,
        handler=handler,
        signing_key=signing_key,
        count=3000,
        seed=11,
    )


async def test_rejection_flood_is_rate_limited(
    mosquitto: MosquittoBroker,
    make_link: LinkFactory,
    handler: RecordingHandler,
    signing_key: Ed25519PrivateKey,
) -> None:
    link = make_link(commands={"max_rejections_per_minute": 5})
    async with observe(mosquitto) as backend, running(link):
        await link.wait_connected()
        for index in range(12):
            await backend.publish(COMMAND_TOPIC, f"not json {index}".encode())
        # Payloads are handled in order, so the valid command's result comes after the flood.
        await backend.publish(COMMAND_TOPIC, command_payload(signing_key, EjectCommand()))
        results: list[CommandResult] = []
        while not results or results[-1].status is CommandStatus.REJECTED:
            results.append(result_of(await backend.next_on("/cmd/result")))
        counters = link.stats().commands

    rejections = results[:-1]
    assert len(rejections) == 5
    assert all(r.reject_reason is CommandRejectReason.INVALID_JSON for r in rejections)
    assert counters.rejected == 12
    assert counters.rejections_suppressed == 7
    assert results[-1].status is CommandStatus.SUCCEEDED
    assert len(handler.calls) == 1
