"""Configuration validation and key loading."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from cloud_link import CloudConfig, CloudConfigError, CloudLink, SigningError, public_key_base64
from cloud_link.signing import load_public_key, load_trusted_keys
from tests.cloud_link.conftest import RecordingHandler, sample_birth


def test_tls_is_default_and_needs_ca() -> None:
    with pytest.raises(ValidationError, match="ca_file"):
        CloudConfig(cabinet_id="cab-1", host="broker.example")


def test_plain_tcp_only_when_explicit() -> None:
    config = CloudConfig.model_validate(
        {"cabinet_id": "cab-1", "host": "127.0.0.1", "tls": {"enabled": False}}
    )

    assert config.tls.enabled is False
    assert config.effective_client_id == "cabinet-cab-1"


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="together"):
        CloudConfig.model_validate(
            {
                "cabinet_id": "cab-1",
                "host": "h",
                "tls": {"ca_file": tmp_path / "ca.pem", "cert_file": tmp_path / "c.pem"},
            }
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cabinet_id", "cab/1"),
        ("cabinet_id", "cab#1"),
        ("topic_prefix", "/cabinets"),
        ("topic_prefix", "cabinets/+"),
        ("mqtt_version", "3.1"),
    ],
)
def test_invalid_values_rejected(field: str, value: str) -> None:
    settings = {"cabinet_id": "cab-1", "host": "h", "tls": {"enabled": False}, field: value}

    with pytest.raises(ValidationError):
        CloudConfig.model_validate(settings)


def test_retention_must_outlast_lifetime() -> None:
    with pytest.raises(ValidationError, match="retention_s"):
        CloudConfig.model_validate(
            {
                "cabinet_id": "cab-1",
                "host": "h",
                "tls": {"enabled": False},
                "commands": {"retention_s": 100, "max_lifetime_s": 300},
            }
        )


def test_public_key_in_pem_and_base64() -> None:
    key = Ed25519PrivateKey.generate()
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    raw = public_key_base64(key)

    assert load_public_key(pem).public_bytes_raw() == load_public_key(raw).public_bytes_raw()


@pytest.mark.parametrize(
    "text",
    ["not base64 !!", base64.b64encode(b"short").decode(), "-----BEGIN PUBLIC KEY-----\nxx\n"],
)
def test_bad_public_key_names_key_id(text: str) -> None:
    with pytest.raises(SigningError, match="'k7'"):
        load_trusted_keys({"k7": text})


def test_bad_trusted_key_is_config_error(tmp_path: Path) -> None:
    config = CloudConfig.model_validate(
        {
            "cabinet_id": "cab-1",
            "host": "127.0.0.1",
            "tls": {"enabled": False},
            "commands": {"trusted_keys": {"k1": "garbage"}},
        }
    )

    with pytest.raises(CloudConfigError, match="k1"):
        CloudLink(
            config,
            database=tmp_path / "cloud_link.sqlite",
            handler=RecordingHandler(),
            birth_provider=sample_birth,
        )
