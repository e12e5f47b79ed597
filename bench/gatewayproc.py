"""The gateway daemon as a child process (`cabinet-gateway run --config FILE`) and /proc readers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOG_CHECK_S = 0.1
# The daemon's start-up line. A bare " ready (" also matches slot state changes such as
# "slot 1: unknown -> ready (status read)", which are logged before the daemon is ready.
READY_MARKER = " ready (serial "
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def toml_value(value: Any) -> str:
    """Format a scalar or a list as TOML; JSON strings are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_toml(path: Path, data: dict[str, Any], prefix: str = "") -> None:
    """Write nested dicts as TOML tables; lists and leaf dicts become inline values."""
    lines: list[str] = []

    def table(name: str, section: dict[str, Any]) -> None:
        leaves = {k: v for k, v in section.items() if not _is_table(v)}
        if name:
            lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in leaves.items())
        for key, value in section.items():
            if _is_table(value):
                table(f"{name}.{key}" if name else key, value)

    table(prefix, data)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and not _is_leaf_mapping(value)


def _is_leaf_mapping(value: dict[str, Any]) -> bool:
    """Return whether a mapping is written inline: all values strings, as in `trusted_keys`."""
    return bool(value) and all(isinstance(item, str) for item in value.values())


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def gateway_binary() -> str:
    return str(Path(sys.executable).parent / "cabinet-gateway")


@contextlib.contextmanager
def gateway_process(config_path: Path, log_path: Path) -> Iterator[GatewayProcess]:
    """Run the daemon for the block and wait until it logs that it is ready."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [gateway_binary(), "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(process, log_path)
    try:
        _wait_ready(gateway)
        yield gateway
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


def _wait_ready(gateway: GatewayProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while READY_MARKER not in gateway.log_text():
        if gateway.process.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {gateway.process.returncode}:\n{gateway.log_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"gateway not ready in {READY_TIMEOUT_S} s")
        # The daemon reports readiness only in its log (or to systemd); poll the file.
        time.sleep(LOG_CHECK_S)


def cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds of a process, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # Fields after the command name start at field 3 (state); utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Return the resident set size of a process, from /proc/PID/statm."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * PAGE_BYTES
