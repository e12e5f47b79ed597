"""TLS and mutual TLS against a real Mosquitto; there is never a plain-TCP fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cloud_link import CloudConfigError, parse_message
from tests.cloud_link.conftest import (
    WAIT_S,
    LinkFactory,
    observe,
    payload_bytes,
    running,
)
from tests.support.certs import Pki, make_pki, mosquitto_tls_lines
from tests.support.mosquitto import BrokerFactory, MosquittoBroker, free_port


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_broker(factory: BrokerFactory, pki: Pki) -> tuple[MosquittoBroker, MosquittoBroker]:
    """Start a broker with an mTLS listener and a plain one for the observer.

    Returns the broker twice: once as the TLS endpoint, once pointing at the plain port.
    """
    plain_port = free_port()
    broker = factory(extra_config=[*mosquitto_tls_lines(pki), f"listener {plain_port} 127.0.0.1"])
    plain = MosquittoBroker(workdir=broker.workdir, port=plain_port)
    return broker, plain


def tls_settings(pki: Pki, **changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "enabled": True,
        "ca_file": pki.ca_file,
        "cert_file": pki.client.cert_file,
        "key_file": pki.client.key_file,
    }
    settings.update(changes)
    return settings


async def test_mutual_tls_connects(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, pki: Pki
) -> None:
    broker, plain = tls_broker(mosquitto_factory, pki)
    link = make_link(broker=broker, tls=tls_settings(pki))
    async with observe(plain) as backend, running(link):
        birth = parse_message(payload_bytes(await backend.next_on("/birth")))

    assert birth.data.kind == "birth"


async def test_server_hostname_override(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, pki: Pki
) -> None:
    broker, plain = tls_broker(mosquitto_factory, pki)
    link = make_link(broker=broker, tls=tls_settings(pki, server_hostname="broker.test"))
    async with observe(plain) as backend, running(link):
        birth = parse_message(payload_bytes(await backend.next_on("/birth")))

    assert birth.data.kind == "birth"


async def test_untrusted_server_is_fatal(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, pki: Pki, tmp_path: Path
) -> None:
    broker, _ = tls_broker(mosquitto_factory, pki)
    other = make_pki(tmp_path / "other")
    link = make_link(broker=broker, tls=tls_settings(pki, ca_file=other.ca_file))
    try:
        with pytest.raises(CloudConfigError, match="certificate"):
            await asyncio.wait_for(link.run(), WAIT_S)
    finally:
        link.close()


async def test_wrong_server_name_is_fatal(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, pki: Pki
) -> None:
    broker, _ = tls_broker(mosquitto_factory, pki)
    link = make_link(broker=broker, tls=tls_settings(pki, server_hostname="not-the-broker.test"))
    try:
        with pytest.raises(CloudConfigError, match="certificate"):
            await asyncio.wait_for(link.run(), WAIT_S)
    finally:
        link.close()


async def test_tls_never_falls_back_to_plain(
    mosquitto: MosquittoBroker, make_link: LinkFactory, pki: Pki
) -> None:
    link = make_link(tls=tls_settings(pki))
    async with running(link):
        stats = await asyncio.wait_for(link.wait_until(lambda s: s.connect_failures >= 2), WAIT_S)

    assert stats.connects == 0


async def test_client_without_certificate_is_fatal(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, pki: Pki
) -> None:
    broker, _ = tls_broker(mosquitto_factory, pki)
    link = make_link(broker=broker, tls=tls_settings(pki, cert_file=None, key_file=None))
    try:
        with pytest.raises(CloudConfigError, match="client certificate"):
            await asyncio.wait_for(link.run(), WAIT_S)
    finally:
        link.close()


def test_missing_ca_file_is_config_error(
    mosquitto: MosquittoBroker, make_link: LinkFactory, pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(CloudConfigError, match="TLS"):
        make_link(tls=tls_settings(pki, ca_file=tmp_path / "missing.pem"))
