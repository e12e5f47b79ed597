"""Command intake: every invalid payload is rejected with the check that failed."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from cloud_link import (
    CommandBody,
    CommandRejectReason,
    CommandSettings,
    EjectCommand,
    SecurityEventKind,
    public_key_base64,
    sign_command,
)
from cloud_link.clock import ManualClock
from cloud_link.intake import (
    CommandIntake,
    CommandRejection,
    ReceivedPayload,
    VerifiedCommand,
    json_depth_exceeds,
)
from cloud_link.signing import load_trusted_keys, sign_body

CABINET = "cab-001"
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def make_intake(clock: ManualClock, **settings: object) -> CommandIntake:
    config = CommandSettings.model_validate(
        {"trusted_keys": {"k1": public_key_base64(KEY)}, **settings}
    )
    return CommandIntake(
        cabinet_id=CABINET,
        settings=config,
        trusted_keys=load_trusted_keys(config.trusted_keys),
        clock=clock,
    )


def signed(
    clock: ManualClock,
    *,
    key: Ed25519PrivateKey = KEY,
    key_id: str = "k1",
    lifetime_s: float = 30.0,
    issued_offset_s: float = 0.0,
    cabinet_id: str = CABINET,
) -> bytes:
    return sign_command(
        key,
        key_id,
        cabinet_id=cabinet_id,
        command_id="cmd-1",
        command=EjectCommand(slot=2),
        lifetime_s=lifetime_s,
        issued_at=datetime.fromtimestamp(clock.wall() + issued_offset_s, tz=UTC),
    )


def received(clock: ManualClock, payload: bytes, expiry_s: int | None = None) -> ReceivedPayload:
    return ReceivedPayload(
        payload=payload,
        received_monotonic=clock.monotonic(),
        received_wall=clock.wall(),
        message_expiry_s=expiry_s,
    )


def rejection(verdict: VerifiedCommand | CommandRejection) -> CommandRejection:
    assert isinstance(verdict, CommandRejection), f"expected a rejection, got {verdict}"
    return verdict


def test_valid_command_is_verified() -> None:
    clock = ManualClock()
    verdict = make_intake(clock).check(received(clock, signed(clock)))

    assert isinstance(verdict, VerifiedCommand)
    assert verdict.body.command_id == "cmd-1"
    assert verdict.key_id == "k1"
    assert verdict.deadline_monotonic == pytest.approx(clock.monotonic() + 30.0)


def raw_body_payload(body: str, key: Ed25519PrivateKey = KEY) -> bytes:
    return sign_body(key, "k1", body).model_dump_json().encode()


def valid_body(clock: ManualClock, **changes: object) -> dict[str, object]:
    issued = datetime.fromtimestamp(clock.wall(), tz=UTC)
    document: dict[str, object] = {
        "cabinet_id": CABINET,
        "command_id": "cmd-1",
        "issued_at": issued.isoformat(),
        "deadline": (issued + timedelta(seconds=30)).isoformat(),
        "command": {"type": "eject", "slot": 2},
    }
    document.update(changes)
    return document


CASES = {
    "too_large": (b"{" + b" " * 9000 + b"}", CommandRejectReason.TOO_LARGE),
    "invalid_utf8": (b'{"key_id": "\xff\xfe"}', CommandRejectReason.INVALID_UTF8),
    "invalid_json": (b'{"key_id": ', CommandRejectReason.INVALID_JSON),
    "too_deep": (b"[" * 40 + b"]" * 40, CommandRejectReason.TOO_DEEP),
    "not_an_object": (b"[1, 2]", CommandRejectReason.INVALID_ENVELOPE),
    "missing_key_id": (b'{"body": "{}", "sig": "AAAA"}', CommandRejectReason.INVALID_ENVELOPE),
    "missing_sig": (b'{"key_id": "k1", "body": "{}"}', CommandRejectReason.MISSING_SIGNATURE),
    "empty_sig": (
        b'{"key_id": "k1", "body": "{}", "sig": ""}',
        CommandRejectReason.MISSING_SIGNATURE,
    ),
    "sig_not_base64": (
        b'{"key_id": "k1", "body": "{}", "sig": "***"}',
        CommandRejectReason.BAD_SIGNATURE,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_payload_rejected(name: str) -> None:
    payload, reason = CASES[name]
    clock = ManualClock()
    verdict = rejection(make_intake(clock).check(received(clock, payload)))

    assert verdict.reason is reason
    assert verdict.detail
    assert verdict.authenticated is False


def test_unknown_key_is_security_event() -> None:
    clock = ManualClock()
    verdict = rejection(make_intake(clock).check(received(clock, signed(clock, key_id="k9"))))

    assert verdict.reason is CommandRejectReason.UNKNOWN_KEY
    assert verdict.security is SecurityEventKind.UNKNOWN_KEY
    assert verdict.key_id == "k9"


def test_forged_signature_is_security_event() -> None:
    clock = ManualClock()
    verdict = rejection(make_intake(clock).check(received(clock, signed(clock, key=OTHER_KEY))))

    assert verdict.reason is CommandRejectReason.BAD_SIGNATURE
    assert verdict.security is SecurityEventKind.BAD_SIGNATURE
    assert verdict.authenticated is False


def test_tampered_body_fails_signature() -> None:
    clock = ManualClock()
    document = json.loads(signed(clock))
    document["body"] = document["body"].replace('"slot":2', '"slot":3')
    verdict = rejection(make_intake(clock).check(received(clock, json.dumps(document).encode())))

    assert verdict.reason is CommandRejectReason.BAD_SIGNATURE


def test_missing_signature_is_security_event() -> None:
    clock = ManualClock()
    document = json.loads(signed(clock))
    del document["sig"]
    verdict = rejection(make_intake(clock).check(received(clock, json.dumps(document).encode())))

    assert verdict.reason is CommandRejectReason.MISSING_SIGNATURE
    assert verdict.security is SecurityEventKind.MISSING_SIGNATURE


def test_wrong_cabinet_is_security_event() -> None:
    clock = ManualClock()
    payload = signed(clock, cabinet_id="cab-999")
    verdict = rejection(make_intake(clock).check(received(clock, payload)))

    assert verdict.reason is CommandRejectReason.WRONG_CABINET
    assert verdict.security is SecurityEventKind.WRONG_CABINET
    assert verdict.authenticated is True


BODY_CASES = {
    "body_not_json": ("{nope", CommandRejectReason.INVALID_JSON),
    "body_not_object": ("[1]", CommandRejectReason.INVALID_SCHEMA),
    "body_too_deep": ('{"a":' * 20 + "1" + "}" * 20, CommandRejectReason.TOO_DEEP),
}


@pytest.mark.parametrize("name", sorted(BODY_CASES))
def test_signed_malformed_body_rejected(name: str) -> None:
    body, reason = BODY_CASES[name]
    clock = ManualClock()
    verdict = rejection(make_intake(clock).check(received(clock, raw_body_payload(body))))

    assert verdict.reason is reason


def test_unknown_command_named() -> None:
    clock = ManualClock()
    body = json.dumps(valid_body(clock, command={"type": "self_destruct"}))
    verdict = rejection(make_intake(clock).check(received(clock, raw_body_payload(body))))

    assert verdict.reason is CommandRejectReason.UNKNOWN_COMMAND
    assert "self_destruct" in verdict.detail
    assert verdict.command_id == "cmd-1"
    assert verdict.authenticated is True


def test_wrong_schema_named() -> None:
    clock = ManualClock()
    body = json.dumps(valid_body(clock, command={"type": "eject", "slot": "left"}))
    verdict = rejection(make_intake(clock).check(received(clock, raw_body_payload(body))))

    assert verdict.reason is CommandRejectReason.INVALID_SCHEMA
    assert "command.eject.slot" in verdict.detail
    assert verdict.command == "eject"


def test_expired_by_wall_clock() -> None:
    clock = ManualClock()
    payload = signed(clock, issued_offset_s=-60.0, lifetime_s=30.0)
    verdict = rejection(make_intake(clock).check(received(clock, payload)))

    assert verdict.reason is CommandRejectReason.EXPIRED


def test_expired_while_queued() -> None:
    clock = ManualClock()
    intake = make_intake(clock)
    payload = received(clock, signed(clock, lifetime_s=5.0))
    clock.advance(6.0)
    verdict = rejection(intake.check(payload))

    assert verdict.reason is CommandRejectReason.EXPIRED


def test_mqtt_expiry_shortens_deadline() -> None:
    clock = ManualClock()
    verdict = make_intake(clock).check(received(clock, signed(clock), expiry_s=4))

    assert isinstance(verdict, VerifiedCommand)
    assert verdict.deadline_monotonic == pytest.approx(clock.monotonic() + 4.0)


def test_unsynchronised_clock_uses_mqtt_expiry_only() -> None:
    clock = ManualClock(synchronised=False)
    # The body claims a deadline long gone, but the wall clock cannot be trusted.
    payload = signed(clock, issued_offset_s=-3600.0)
    verdict = make_intake(clock).check(received(clock, payload, expiry_s=10))

    assert isinstance(verdict, VerifiedCommand)
    assert verdict.deadline_monotonic == pytest.approx(clock.monotonic() + 10.0)


def test_no_trusted_deadline_rejected() -> None:
    clock = ManualClock(synchronised=False)
    verdict = rejection(make_intake(clock).check(received(clock, signed(clock))))

    assert verdict.reason is CommandRejectReason.NO_TRUSTED_DEADLINE


def test_far_future_deadline_rejected() -> None:
    clock = ManualClock()
    verdict = rejection(
        make_intake(clock, max_lifetime_s=300.0).check(
            received(clock, signed(clock, lifetime_s=3600.0))
        )
    )

    assert verdict.reason is CommandRejectReason.DEADLINE_TOO_FAR


def test_deadline_far_ahead_of_our_clock_rejected() -> None:
    clock = ManualClock()
    payload = signed(clock, issued_offset_s=200.0, lifetime_s=200.0)
    verdict = rejection(
        make_intake(clock, max_lifetime_s=300.0, max_clock_skew_s=30.0).check(
            received(clock, payload)
        )
    )

    assert verdict.reason is CommandRejectReason.ISSUED_IN_FUTURE


def test_mqtt_expiry_capped_at_max_lifetime() -> None:
    clock = ManualClock(synchronised=False)
    verdict = make_intake(clock, max_lifetime_s=60.0).check(
        received(clock, signed(clock), expiry_s=86400)
    )

    assert isinstance(verdict, VerifiedCommand)
    assert verdict.deadline_monotonic == pytest.approx(clock.monotonic() + 60.0)


def test_depth_scanner_ignores_brackets_in_strings() -> None:
    text = json.dumps({"a": "[[[[[[[[[[[[[[[[[[[[", "b": ['"\\]]]]']})

    assert json_depth_exceeds(text, 3) is False
    assert json_depth_exceeds("[[[[1]]]]", 3) is True


def test_command_body_schema_round_trip() -> None:
    clock = ManualClock()
    document = json.loads(signed(clock))
    body = CommandBody.model_validate_json(document["body"])

    assert body.command == EjectCommand(slot=2)
    assert len(base64.b64decode(document["sig"])) == 64


@given(st.binary(max_size=600))
def test_random_bytes_never_raise(payload: bytes) -> None:
    clock = ManualClock()
    verdict = make_intake(clock).check(received(clock, payload))

    assert isinstance(verdict, CommandRejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_random_signed_bodies_never_raise(value: object) -> None:
    clock = ManualClock()
    verdict = make_intake(clock).check(received(clock, raw_body_payload(json.dumps(value))))

    assert isinstance(verdict, CommandRejection)
    assert verdict.reason is not CommandRejectReason.BAD_SIGNATURE


def test_deadline_before_issue_rejected() -> None:
    clock = ManualClock()
    body = json.dumps(
        valid_body(
            clock,
            deadline=datetime.fromtimestamp(clock.wall() - 1, tz=UTC).isoformat(),
        )
    )
    verdict = rejection(make_intake(clock).check(received(clock, raw_body_payload(body), 30)))

    assert verdict.reason is CommandRejectReason.INVALID_SCHEMA
    assert "deadline" in verdict.detail


def test_non_canonical_signature_rejected() -> None:
    clock = ManualClock()
    document = json.loads(signed(clock))
    # The last character before "==" carries 4 unused bits; setting one keeps the bytes.
    sig = document["sig"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    document["sig"] = sig[:-3] + alphabet[last ^ 1] + "=="
    assert base64.b64decode(document["sig"]) == base64.b64decode(sig)
    verdict = rejection(make_intake(clock).check(received(clock, json.dumps(document).encode())))

    assert verdict.reason is CommandRejectReason.BAD_SIGNATURE
