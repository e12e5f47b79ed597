"""`cabinet-gateway demo` as a process: one SIGINT or SIGTERM stops all of it."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNING_LINE = "control socket:"
START_TIMEOUT_S = 30.0
# The signal usually comes before the demo's first rent (2 s after start-up) and the demo stops
# at once. On a slow machine a rent may have started, and the daemon then waits for its eject,
# at most cabinet.shutdown_eject_wait_s (40 s by default).
STOP_TIMEOUT_S = 45.0


def _start_demo() -> tuple[subprocess.Popen[str], threading.Thread, queue.Queue[str | None]]:
    """Start the demo without the live view and a thread that copies its output lines.

    The thread puts each line into the queue, closes the pipe at the end and then puts None.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from gateway.entry import main; main()",
            "demo",
            "--no-view",
            "--lang",
            "en",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def copy_lines() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=copy_lines, name="demo-output", daemon=True)
    reader.start()
    return process, reader, lines


def _read_until(lines: queue.Queue[str | None], text: str, timeout_s: float) -> list[str]:
    """Return the output lines up to the first one containing `text`.

    Fails the test when the output ends or `timeout_s` passes first.
    """
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no line with {text!r} within {timeout_s} s; output: {''.join(seen)}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            pytest.fail(f"the demo ended before printing {text!r}; output: {''.join(seen)}")
        seen.append(line)
        if text in line:
            return seen


def _drain(lines: queue.Queue[str | None]) -> str:
    """Collect the output lines left in the queue, up to the end of the output."""
    rest: list[str] = []
    while (line := lines.get(timeout=STOP_TIMEOUT_S)) is not None:
        rest.append(line)
    return "".join(rest)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_demo_stops_on_one_signal(signum: signal.Signals) -> None:
    process, reader, lines = _start_demo()
    try:
        started = "".join(_read_until(lines, RUNNING_LINE, START_TIMEOUT_S))

        process.send_signal(signum)
        try:
            returncode = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo still runs {STOP_TIMEOUT_S} s after {signum.name}")
        output = started + _drain(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(STOP_TIMEOUT_S)

    assert returncode == 0, output
    assert "Traceback" not in output, output
    assert "Demo finished:" in output, output
