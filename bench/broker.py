"""A Mosquitto broker on 127.0.0.1 and a free port, for the length of one benchmark."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_BINARY = Path(os.environ.get("MOSQUITTO_BINARY", "/usr/sbin/mosquitto"))
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
CONNECT_RETRY_S = 0.01


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _write_config(workdir: Path, port: int) -> Path:
    config = workdir / "mosquitto.conf"
    lines = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        # Mosquitto started as root switches to this user; keep ours so it can write here.
        f"user {getpass.getuser()}",
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "set_tcp_nodelay true",
        "persistence false",
        # The drain benchmark queues 100,000 QoS 1 messages for one subscriber.
        "max_queued_messages 0",
    ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _wait_accepting(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode} on port {port}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"mosquitto did not accept on port {port} in {START_TIMEOUT_S} s"
                ) from None
        # The broker needs a few milliseconds to bind; nothing else signals it.
        time.sleep(CONNECT_RETRY_S)


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[Broker]:
    """Run Mosquitto for the block; it is stopped with SIGTERM (SIGKILL if needed) afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _write_config(workdir, port)
    process = subprocess.Popen(
        [str(MOSQUITTO_BINARY), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_accepting(process, port)
        yield Broker(HOST, port, process)
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
