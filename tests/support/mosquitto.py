"""A real Mosquitto broker on 127.0.0.1 for tests.

Usage in a test module or conftest:

    from tests.support.mosquitto import mosquitto, mosquitto_factory  # noqa: F401  (fixtures)

    def test_something(mosquitto: MosquittoBroker) -> None: ...
    def test_limits(mosquitto_factory: BrokerFactory) -> None:
        broker = mosquitto_factory(extra_config=["message_size_limit 2048"])

Each broker gets a free port and its own directory with a generated config. It can be
stopped, killed, restarted on the same port, and paused with SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MOSQUITTO_BINARY = Path(os.environ.get("MOSQUITTO_BINARY", "/usr/sbin/mosquitto"))
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.01

BrokerFactory = Callable[..., "MosquittoBroker"]


class BrokerStartError(RuntimeError):
    """Mosquitto exited or did not accept connections in time."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MosquittoBroker:
    """One Mosquitto process and its files under `workdir`."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: Sequence[str] = ()
    persistence: bool = False
    host: str = HOST
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Mosquitto started as root switches to this user; keep ours so it can write here.
            f"user {getpass.getuser()}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "set_tcp_nodelay true",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.workdir}/")
        lines.extend(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the broker and return once it accepts TCP connections."""
        if self.running:
            raise RuntimeError("broker is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with (self.workdir / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                [str(MOSQUITTO_BINARY), "-c", str(self.config_path)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.paused = False
        self._wait_accepting(timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker with SIGTERM (SIGKILL if it does not exit in time)."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would."""
        self._end(signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Stop and start again on the same port and config."""
        self.stop()
        self.start(timeout_s)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but the broker sends nothing."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def log_text(self) -> str:
        return (
            self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("broker is not running")
        self.process.send_signal(signum)

    def _end(self, signum: signal.Signals, timeout_s: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            if self.paused:
                process.send_signal(signal.SIGCONT)
            process.send_signal(signum)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        self.process = None
        self.paused = False

    def _wait_accepting(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None:
                raise BrokerStartError("broker process is gone")
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                stderr = (self.workdir / "stderr.log").read_text(errors="replace")
                raise BrokerStartError(
                    f"mosquitto exited with {code} on port {self.port}:\n"
                    f"{stderr}\n{self.log_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError(
                    f"mosquitto did not accept on port {self.port} in {timeout_s} s"
                )
            # Polls the condition itself: the broker needs a few milliseconds to bind.
            time.sleep(POLL_INTERVAL_S)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Return a function that starts brokers; every broker it started is stopped afterwards.

    Keyword arguments go to `MosquittoBroker` (`extra_config`, `persistence`, `port`).
    """
    brokers: list[MosquittoBroker] = []

    def start_broker(**kwargs: object) -> MosquittoBroker:
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        broker = MosquittoBroker(workdir=workdir, **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        broker.start()
        return broker

    yield start_broker
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    """A plain-TCP broker with default settings."""
    return mosquitto_factory()
