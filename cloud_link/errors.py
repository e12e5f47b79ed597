"""Exceptions raised by the cloud link."""

from __future__ import annotations


class CloudLinkError(Exception):
    """Base class of every error raised by `cloud_link`."""


class CloudConfigError(CloudLinkError):
    """The configuration cannot work, for example a TLS file is missing or rejected.

    The session stops on this error instead of retrying, because retrying cannot fix it.
    """


class OutboxFullError(CloudLinkError):
    """The outbox has no room for a message that must not be dropped."""

    def __init__(self, lane: str, size: int, used_bytes: int, max_bytes: int) -> None:
        super().__init__(
            f"outbox full: cannot store a {size}-byte {lane} message "
            f"({used_bytes} of {max_bytes} bytes used)"
        )
        self.lane = lane
        self.size = size
        self.used_bytes = used_bytes
        self.max_bytes = max_bytes


class StorageError(CloudLinkError):
    """The state database cannot be used as the cloud link needs it."""


class UnknownCommandError(CloudLinkError):
    """A command id is not in the command store."""


class SigningError(CloudLinkError):
    """A signing key cannot be loaded or used."""
