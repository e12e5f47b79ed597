"""TLS context for the broker connection. There is no plain-TCP fallback."""

from __future__ import annotations

import ssl
from typing import Any

from cloud_link.config import TlsConfig
from cloud_link.errors import CloudConfigError


class LinkTlsContext(ssl.SSLContext):
    """Client context that can verify a fixed broker name and close a failed handshake's socket.

    paho-mqtt 2.x leaves the socket open when the handshake fails, so the link closes
    `last_socket` itself.
    """

    verify_name: str | None = None
    last_socket: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.verify_name is not None:
            kwargs["server_hostname"] = self.verify_name
        self.last_socket = super().wrap_socket(*args, **kwargs)
        return self.last_socket

    def close_last_socket(self) -> None:
        if self.last_socket is not None:
            self.last_socket.close()
            self.last_socket = None


def build_tls_context(config: TlsConfig) -> LinkTlsContext | None:
    """Return the client TLS context, or None when TLS is explicitly disabled.

    Raises `CloudConfigError` when a file is missing or unusable.
    """
    if not config.enabled:
        return None
    context = LinkTlsContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_name = config.server_hostname
    try:
        context.load_verify_locations(cafile=config.ca_file)
        if config.cert_file is not None:
            context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise CloudConfigError(f"cannot load TLS files: {exc}") from exc
    return context


def is_certificate_alert(text: str) -> bool:
    """Return whether a TLS alert text from the broker is about our certificate."""
    upper = text.upper()
    return "CERTIFICATE" in upper or "UNKNOWN_CA" in upper or "UNKNOWN CA" in upper


def is_certificate_error(exc: BaseException) -> bool:
    """Return whether a connect error means the certificates do not match, not a network fault."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        return "CERTIFICATE" in reason or "UNKNOWN_CA" in reason
    return False
