"""systemd integration: sd_notify readiness, status and watchdog pings.

The notification protocol is one datagram per message to the Unix socket named by
NOTIFY_SOCKET (an abstract socket when the name starts with '@'), as described in the
sd_notify(3) manual. Outside systemd every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        watchdog_usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s: float | None = None
        if watchdog_usec and watchdog_usec.isdigit() and int(watchdog_usec) > 0:
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval_s = int(watchdog_usec) / 1_000_000 / 2

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            logger.warning("sd_notify %r failed: %s", message.split("=", maxsplit=1)[0], exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog while the event loop runs; a stuck loop stops the pings."""
        if self.watchdog_interval_s is None or self._address is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)
