"""TLS through the daemon's own configuration, with a CA generated in the test.

The cloud link's TLS unit tests cover the same cases on `CloudLink`. These start the whole
`Daemon` from its config and add expired certificates on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_link.errors import CloudConfigError
from gateway.config import config_from_dict
from gateway.daemon import Daemon
from tests.support.certs import CertificateAuthority, Issued, Pki, mosquitto_tls_lines
from tests.support.mosquitto import BrokerFactory, MosquittoBroker, free_port

pytestmark = pytest.mark.faults

CABINET = "TLS-0001"
WAIT_S = 20.0


def issue_expired(authority: CertificateAuthority, name: str, *, server: bool) -> Issued:
    """Issue a certificate from `authority` whose validity ended yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("broker.test")]), critical=False
        )
    cert = builder.sign(authority.key, hashes.SHA256())
    issued = Issued(authority.directory / f"{name}.pem", authority.directory / f"{name}.key")
    issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return issued


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "pki")


def pki_of(authority: CertificateAuthority, *, server: Issued | None = None) -> Pki:
    return Pki(
        ca_file=authority.ca_file,
        server=server or authority.issue("broker", server=True, dns_names=("broker.test",)),
        client=authority.issue("cabinet", server=False),
    )


def tls_broker(factory: BrokerFactory, pki: Pki) -> tuple[MosquittoBroker, int]:
    """A broker with an mTLS listener on its port and a plain listener for the observer."""
    plain_port = free_port()
    broker = factory(extra_config=[*mosquitto_tls_lines(pki), f"listener {plain_port} 127.0.0.1"])
    return broker, plain_port


def daemon_for(tmp_path: Path, port: int, tls: dict[str, Any]) -> Daemon:
    state = tmp_path / "state"
    config = config_from_dict(
        {
            "cabinet": {"id": CABINET, "state_dir": str(state)},
            # No serial port: the bridge keeps retrying it, which does not concern TLS.
            "serial": {
                "port": str(tmp_path / "absent-tty"),
                "boards": [{"address": 1, "slot_count": 4}],
            },
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
                "connect_timeout_s": 5,
                "tls": tls,
                "commands": {"clock_sync": "synchronised"},
            },
            "control": {"socket": str(tmp_path / "control.sock")},
        }
    )
    return Daemon(config)


def client_tls(pki: Pki, **changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "enabled": True,
        "ca_file": str(pki.ca_file),
        "cert_file": str(pki.client.cert_file),
        "key_file": str(pki.client.key_file),
        "server_hostname": "broker.test",
    }
    settings.update({key: str(value) if value else value for key, value in changes.items()})
    return settings


def mqtt_sessions(broker: MosquittoBroker) -> int:
    """Count the MQTT connections the broker accepted from the cabinet (CONNECT done)."""
    return broker.log_text().count(f" as cabinet-{CABINET} ")


async def fatal_error(daemon: Daemon) -> BaseException:
    """Run the daemon until it fails; return the innermost error."""
    with pytest.raises(BaseException) as caught:  # noqa: PT011  (an ExceptionGroup is expected)
        await asyncio.wait_for(daemon.run(), WAIT_S)
    error = caught.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def test_mutual_tls_daemon_connects(
    mosquitto_factory: BrokerFactory, authority: CertificateAuthority, tmp_path: Path
) -> None:
    """Invariant: a valid mutual-TLS configuration connects and publishes the birth."""
    pki = pki_of(authority)
    broker, plain_port = tls_broker(mosquitto_factory, pki)
    daemon = daemon_for(tmp_path, broker.port, client_tls(pki))
    async with aiomqtt.Client("127.0.0.1", plain_port) as backend:
        await backend.subscribe(f"cabinets/{CABINET}/birth", qos=1)
        task = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(WAIT_S):
                async for message in backend.messages:
                    birth_topic = str(message.topic)
                    break
        finally:
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, WAIT_S)

    assert birth_topic == f"cabinets/{CABINET}/birth"
    assert mqtt_sessions(broker) == 1


@pytest.mark.parametrize(
    "case", ["wrong host name", "expired server", "expired client", "unknown CA", "no client cert"]
)
async def test_bad_tls_fails_clearly(
    mosquitto_factory: BrokerFactory,
    authority: CertificateAuthority,
    tmp_path: Path,
    case: str,
) -> None:
    """Invariant: each broken TLS setup stops the daemon with a CloudConfigError naming the
    certificate problem, without ever completing an MQTT connection."""
    server = issue_expired(authority, "broker", server=True) if case == "expired server" else None
    pki = pki_of(authority, server=server)
    broker, _ = tls_broker(mosquitto_factory, pki)
    table: dict[str, dict[str, Any]] = {
        "wrong host name": {"server_hostname": "not-the-broker.test"},
        "expired server": {},
        "unknown CA": {"ca_file": CertificateAuthority(tmp_path / "other", "Other CA").ca_file},
        "no client cert": {"cert_file": None, "key_file": None},
    }
    changes = table.get(case, {})
    if case == "expired client":
        expired = issue_expired(authority, "old-cabinet", server=False)
        changes = {"cert_file": expired.cert_file, "key_file": expired.key_file}
    daemon = daemon_for(tmp_path, broker.port, client_tls(pki, **changes))
    error = await fatal_error(daemon)

    assert isinstance(error, CloudConfigError)
    assert "certificate" in str(error)
    assert mqtt_sessions(broker) == 0


async def test_tls_daemon_never_plain(
    mosquitto: MosquittoBroker, authority: CertificateAuthority, tmp_path: Path
) -> None:
    """Invariant: with TLS configured against a plain-TCP broker the daemon keeps failing to
    connect and never completes an MQTT connection in the clear."""
    pki = pki_of(authority)
    daemon = daemon_for(tmp_path, mosquitto.port, client_tls(pki))
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(WAIT_S):
            stats = await daemon.cloud.wait_until(lambda s: s.connect_failures >= 3)
        sessions = mqtt_sessions(mosquitto)
    finally:
        daemon.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, WAIT_S)

    assert stats.connects == 0
    assert sessions == 0
