"""Checks every payload on the command topic before anything acts on it.

Order of checks: size, UTF-8, JSON nesting depth, JSON, envelope, signature (key id and
Ed25519), body JSON, command type, body schema, cabinet id, then the deadline. A payload
that fails a check becomes a `CommandRejection` naming the failed check.

Deadline rule: the command's monotonic deadline is the earliest of
- receipt time + the MQTT 5 message expiry interval left when the broker delivered it
  (capped at `max_lifetime_s`), and
- receipt time + (body deadline - wall clock at receipt), used only while the wall clock is
  known to be synchronised.
With neither source (MQTT 3.1.1 and an unsynchronised clock) the command is rejected, because
its age cannot be known.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from cloud_link.clock import Clock
from cloud_link.commands import COMMAND_TYPES, CommandBody, SignedCommand
from cloud_link.config import CommandSettings
from cloud_link.messages import CommandRejectReason, SecurityEventKind
from cloud_link.signing import verify_signature

ED25519_SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class ReceivedPayload:
    """A raw command-topic message and what the MQTT layer knew about it at receipt."""

    payload: bytes
    received_monotonic: float
    received_wall: float
    message_expiry_s: int | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    acknowledge: Callable[[], None] | None = None
    """Callback that sends the PUBACK, once the command or its rejection is stored."""


@dataclass(frozen=True)
class VerifiedCommand:
    body: CommandBody
    key_id: str
    deadline_monotonic: float


@dataclass(frozen=True)
class CommandRejection:
    """Reason a payload was rejected.

    `authenticated` is true when the signature was valid, so `command_id` can be trusted
    and the rejection stored as that command's final result.
    """

    reason: CommandRejectReason
    detail: str
    command_id: str | None = None
    command: str | None = None
    key_id: str | None = None
    security: SecurityEventKind | None = None
    authenticated: bool = False


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """Return whether arrays and objects in `text` nest deeper than `max_depth`.

    Runs before `json.loads`, whose recursion a hostile payload could exhaust.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False  # too few brackets to nest that deep, even inside strings
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


class CommandIntake:
    """Turns raw command payloads into verified commands or rejections."""

    def __init__(
        self,
        *,
        cabinet_id: str,
        settings: CommandSettings,
        trusted_keys: dict[str, Ed25519PublicKey],
        clock: Clock,
    ) -> None:
        self._cabinet_id = cabinet_id
        self._settings = settings
        self._keys = trusted_keys
        self._clock = clock

    def check(self, received: ReceivedPayload) -> VerifiedCommand | CommandRejection:
        signed = self._check_envelope(received.payload)
        if isinstance(signed, CommandRejection):
            return signed

        raw_body = self._check_body_json(signed)
        if isinstance(raw_body, CommandRejection):
            return raw_body

        body = self._check_body_schema(signed.key_id, raw_body)
        if isinstance(body, CommandRejection):
            return body

        return self._check_deadline(signed.key_id, body, received)

    def _check_envelope(self, payload: bytes) -> SignedCommand | CommandRejection:
        limit = self._settings.max_payload_bytes
        if len(payload) > limit:
            return CommandRejection(
                CommandRejectReason.TOO_LARGE, f"payload is {len(payload)} bytes, limit {limit}"
            )
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return CommandRejection(
                CommandRejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}"
            )
        if json_depth_exceeds(text, self._settings.max_json_depth):
            return CommandRejection(
                CommandRejectReason.TOO_DEEP,
                f"JSON nests deeper than {self._settings.max_json_depth} levels",
            )
        try:
            document = json.loads(text)
        except ValueError as exc:
            return CommandRejection(CommandRejectReason.INVALID_JSON, f"invalid JSON: {exc}")

        if not isinstance(document, dict):
            return CommandRejection(
                CommandRejectReason.INVALID_ENVELOPE, "payload must be a JSON object"
            )
        key_id = document.get("key_id")
        key_text = key_id if isinstance(key_id, str) else None
        if isinstance(document.get("body"), str) and not document.get("sig"):
            return CommandRejection(
                CommandRejectReason.MISSING_SIGNATURE,
                "command is not signed",
                key_id=key_text,
                security=SecurityEventKind.MISSING_SIGNATURE,
            )
        try:
            signed = SignedCommand.model_validate(document)
        except ValidationError as exc:
            return CommandRejection(
                CommandRejectReason.INVALID_ENVELOPE, _summarise(exc), key_id=key_text
            )
        return self._check_signature(signed)

    def _check_signature(self, signed: SignedCommand) -> SignedCommand | CommandRejection:
        key = self._keys.get(signed.key_id)
        if key is None:
            return CommandRejection(
                CommandRejectReason.UNKNOWN_KEY,
                f"key id {signed.key_id!r} is not trusted",
                key_id=signed.key_id[:64],
                security=SecurityEventKind.UNKNOWN_KEY,
            )
        if not _signature_well_formed(signed.sig) or not verify_signature(key, signed):
            return CommandRejection(
                CommandRejectReason.BAD_SIGNATURE,
                f"signature does not verify with key {signed.key_id!r}",
                key_id=signed.key_id,
                security=SecurityEventKind.BAD_SIGNATURE,
            )
        return signed

    def _check_body_json(self, signed: SignedCommand) -> dict[str, Any] | CommandRejection:
        if json_depth_exceeds(signed.body, self._settings.max_json_depth):
            return CommandRejection(
                CommandRejectReason.TOO_DEEP,
                f"body JSON nests deeper than {self._settings.max_json_depth} levels",
                key_id=signed.key_id,
            )
        try:
            document = json.loads(signed.body)
        except ValueError as exc:
            return CommandRejection(
                CommandRejectReason.INVALID_JSON, f"invalid body JSON: {exc}", key_id=signed.key_id
            )
        if not isinstance(document, dict):
            return CommandRejection(
                CommandRejectReason.INVALID_SCHEMA,
                "body must be a JSON object",
                key_id=signed.key_id,
            )
        return document

    def _check_body_schema(
        self, key_id: str, document: dict[str, Any]
    ) -> CommandBody | CommandRejection:
        command_id = _readable_id(document.get("command_id"))
        command = document.get("command")
        command_type = command.get("type") if isinstance(command, dict) else None
        type_name = command_type if isinstance(command_type, str) else None
        if type_name not in COMMAND_TYPES:
            return CommandRejection(
                CommandRejectReason.UNKNOWN_COMMAND,
                f"unknown command type {str(command_type)[:40]!r}; "
                f"expected one of {', '.join(COMMAND_TYPES)}",
                command_id=command_id,
                key_id=key_id,
                authenticated=True,
            )
        try:
            body = CommandBody.model_validate(document)
        except ValidationError as exc:
            return CommandRejection(
                CommandRejectReason.INVALID_SCHEMA,
                _summarise(exc),
                command_id=command_id,
                command=type_name,
                key_id=key_id,
                authenticated=True,
            )
        if body.cabinet_id != self._cabinet_id:
            return CommandRejection(
                CommandRejectReason.WRONG_CABINET,
                f"command is for cabinet {body.cabinet_id!r}",
                command_id=body.command_id,
                command=type_name,
                key_id=key_id,
                security=SecurityEventKind.WRONG_CABINET,
                authenticated=True,
            )
        return body

    def _check_deadline(
        self, key_id: str, body: CommandBody, received: ReceivedPayload
    ) -> VerifiedCommand | CommandRejection:
        def reject(reason: CommandRejectReason, detail: str) -> CommandRejection:
            return CommandRejection(
                reason,
                detail,
                command_id=body.command_id,
                command=body.command.type,
                key_id=key_id,
                authenticated=True,
            )

        settings = self._settings
        lifetime = (body.deadline - body.issued_at).total_seconds()
        if lifetime <= 0:
            return reject(CommandRejectReason.INVALID_SCHEMA, "deadline is not after issued_at")
        if lifetime > settings.max_lifetime_s:
            return reject(
                CommandRejectReason.DEADLINE_TOO_FAR,
                f"deadline is {lifetime:.0f} s after issue, limit {settings.max_lifetime_s:.0f} s",
            )

        candidates: list[float] = []
        if received.message_expiry_s is not None:
            remaining = min(float(received.message_expiry_s), settings.max_lifetime_s)
            candidates.append(received.received_monotonic + remaining)

        if self._clock.wall_synchronised():
            now = received.received_wall
            if body.issued_at.timestamp() > now + settings.max_clock_skew_s:
                return reject(
                    CommandRejectReason.ISSUED_IN_FUTURE,
                    f"issued {body.issued_at.timestamp() - now:.0f} s in the future",
                )
            remaining = body.deadline.timestamp() - now
            if remaining > settings.max_lifetime_s + settings.max_clock_skew_s:
                return reject(
                    CommandRejectReason.DEADLINE_TOO_FAR,
                    f"deadline is {remaining:.0f} s ahead, limit {settings.max_lifetime_s:.0f} s",
                )
            candidates.append(received.received_monotonic + remaining)

        if not candidates:
            return reject(
                CommandRejectReason.NO_TRUSTED_DEADLINE,
                "no MQTT message expiry and the wall clock is not synchronised",
            )
        deadline = min(candidates)
        if deadline <= self._clock.monotonic():
            return reject(CommandRejectReason.EXPIRED, "deadline has passed")
        return VerifiedCommand(body=body, key_id=key_id, deadline_monotonic=deadline)


def _signature_well_formed(sig: str) -> bool:
    """Return whether `sig` is canonical base64 of 64 bytes.

    Base64 ignores the unused bits of the last character, so several strings decode to the
    same signature. Only the canonical one is accepted, so each authentic request has one form.
    """
    try:
        raw = base64.b64decode(sig, validate=True)
    except binascii.Error:
        return False
    return len(raw) == ED25519_SIGNATURE_BYTES and base64.b64encode(raw).decode() == sig


def _readable_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
        return value
    return None


def _summarise(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "payload"
    return f"{location}: {first['msg']} ({exc.error_count()} error(s))"
