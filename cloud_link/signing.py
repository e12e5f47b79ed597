"""Ed25519 signing of command requests.

The signed bytes are exactly the UTF-8 encoding of the `body` string carried in the
`SignedCommand` envelope. Verifiers never re-serialise JSON.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_link.commands import Command, CommandBody, SignedCommand
from cloud_link.errors import SigningError

ED25519_KEY_BYTES = 32


def load_public_key(text: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM or from base64 of its 32 raw bytes."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped.encode())
        except ValueError as exc:
            raise SigningError(f"invalid PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"public key is {type(key).__name__}, expected Ed25519")
        return key
    try:
        raw = base64.b64decode(stripped, validate=True)
    except binascii.Error as exc:
        raise SigningError("public key is neither PEM nor valid base64") from exc
    if len(raw) != ED25519_KEY_BYTES:
        raise SigningError(f"raw Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_trusted_keys(keys: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """Load every configured key, naming the key id that fails."""
    loaded: dict[str, Ed25519PublicKey] = {}
    for key_id, text in keys.items():
        try:
            loaded[key_id] = load_public_key(text)
        except SigningError as exc:
            raise SigningError(f"trusted key {key_id!r}: {exc}") from exc
    return loaded


def public_key_base64(private_key: Ed25519PrivateKey) -> str:
    """Return the base64 raw public key, the form `CommandSettings.trusted_keys` accepts."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


def sign_body(private_key: Ed25519PrivateKey, key_id: str, body: str) -> SignedCommand:
    """Sign an already serialised body string."""
    signature = private_key.sign(body.encode("utf-8"))
    return SignedCommand(key_id=key_id, body=body, sig=base64.b64encode(signature).decode())


def verify_signature(public_key: Ed25519PublicKey, signed: SignedCommand) -> bool:
    """Return whether `signed.sig` is a valid signature of `signed.body` by `public_key`."""
    try:
        signature = base64.b64decode(signed.sig, validate=True)
    except binascii.Error:
        return False
    try:
        public_key.verify(signature, signed.body.encode("utf-8"))
    except InvalidSignature:
        return False
    return True


def sign_command(
    private_key: Ed25519PrivateKey,
    key_id: str,
    *,
    cabinet_id: str,
    command_id: str,
    command: Command,
    lifetime_s: float = 60.0,
    issued_at: datetime | None = None,
) -> bytes:
    """Build, sign and serialise a command request: the bytes to publish on the command topic.

    Intended for backends, the demo's scripted cloud and tests.
    """
    issued = issued_at or datetime.now(UTC)
    body = CommandBody(
        cabinet_id=cabinet_id,
        command_id=command_id,
        issued_at=issued,
        deadline=issued + timedelta(seconds=lifetime_s),
        command=command,
    )
    signed = sign_body(private_key, key_id, body.model_dump_json())
    return signed.model_dump_json().encode()
