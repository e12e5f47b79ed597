"""footprint: the daemon's idle CPU and memory, and its memory with a large outbox backlog.

The daemon runs as `cabinet-gateway run --config FILE` in its own process, polling a
24-slot simulator (4 boards x 6 slots, in another process) over a pseudo-terminal and
connected to a local Mosquitto. Its CPU is read from /proc/PID/stat over an idle window
and its RSS from /proc/PID/statm. For the backlog part the daemon starts offline (the broker
port is closed) on an outbox that already contains N return events, bulk-inserted as rows
identical to what `Outbox.enqueue` writes, and its RSS is read after it settled.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.broker import free_port, mosquitto
from bench.gatewayproc import cpu_seconds, gateway_process, rss_bytes, write_toml
from bench.result import BenchResult, safe_ratio
from bench.simproc import simulator_process
from cabinet_sim import SimConfig
from cloud_link.clock import SystemClock
from cloud_link.config import OutboxLimits
from cloud_link.messages import ReturnEvent
from cloud_link.outbox import Outbox
from cloud_link.session import DATABASE_NAME
from cloud_link.storage import Storage
from cloud_link.topics import Topics

CABINET = "BENCH-0001"
BOARDS = 4
SLOTS_PER_BOARD = 6
CPU_TARGET_PERCENT = 1.0
RSS_TARGET_MB = 60.0
GROWTH_TARGET_MB = 5.0
SETTLE_S = 5.0
FULL_IDLE_S = 60.0
QUICK_IDLE_S = 15.0
FULL_BACKLOGS = (0, 100_000, 1_000_000)
QUICK_BACKLOGS = (0, 100_000)
OUTBOX_BYTES = 1 << 30
SIM_LIFETIME_S = 900.0
MB = 1024 * 1024


def gateway_config(state_dir: Path, port: str, broker_port: int) -> dict[str, Any]:
    return {
        "cabinet": {"id": CABINET, "state_dir": str(state_dir)},
        "serial": {
            "port": port,
            "boards": [
                {"address": address, "slot_count": SLOTS_PER_BOARD}
                for address in range(1, BOARDS + 1)
            ],
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "mqtt_version": "5",
            "tls": {"enabled": False},
            "reconnect_min_s": 1.0,
            "reconnect_max_s": 30.0,
            "outbox": {"max_bytes": OUTBOX_BYTES},
        },
        "control": {"socket": str(state_dir / "control.sock")},
        "log": {"level": "INFO"},
    }


def fill_backlog(database: Path, count: int) -> None:
    """Store `count` return events: one through Outbox.enqueue, the rest copied in SQL."""
    if count == 0:
        return
    storage = Storage(database)
    outbox = Outbox(
        storage,
        cabinet_id=CABINET,
        limits=OutboxLimits(max_bytes=OUTBOX_BYTES),
        clock=SystemClock(),
    )
    event = ReturnEvent(slot=3, bank_id="00A1B2C3D4E5F601", recognised=True, soc_percent=91)
    seq = outbox.enqueue(
        event, topic=Topics("cabinets", CABINET).event("bank_returned"), offline=True
    )
    with storage.transaction(durable=True) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO outbox (lane, seq, topic, payload, size, qos, retain, expiry_s,"
            " correlation_data, coalesce_key, created_at)"
            " SELECT lane, seq + i, topic, payload, size, qos, retain, expiry_s,"
            " correlation_data, coalesce_key, created_at FROM outbox, n WHERE seq = ?",
            (count - 1, seq),
        )
        conn.execute("UPDATE outbox_meta SET value = ? WHERE key = 'max_seq'", (seq + count - 1,))
    storage.close()


def measure_idle(work: Path, idle_s: float) -> tuple[float, int]:
    """Return the daemon's CPU percent of one core over `idle_s` and its RSS afterwards."""
    sim = SimConfig(boards=BOARDS, slots_per_board=SLOTS_PER_BOARD, seed=3)
    link = work / "ttyCAB"
    state = work / "state-idle"
    state.mkdir()
    with mosquitto(work / "broker") as broker, simulator_process(sim, link, SIM_LIFETIME_S):
        config = work / "idle.toml"
        write_toml(config, gateway_config(state, str(link), broker.port))
        with gateway_process(config, work / "idle.log") as gateway:
            time.sleep(SETTLE_S)  # startup work (first bank reads, birth) is not idle
            cpu_before = cpu_seconds(gateway.pid)
            started = time.monotonic()
            time.sleep(idle_s)
            cpu_used = cpu_seconds(gateway.pid) - cpu_before
            elapsed = time.monotonic() - started
            return cpu_used / elapsed * 100.0, rss_bytes(gateway.pid)


def measure_backlog(work: Path, count: int) -> int:
    """Return the RSS of the daemon started offline on `count` buffered events."""
    sim = SimConfig(boards=BOARDS, slots_per_board=SLOTS_PER_BOARD, seed=3)
    link = work / f"ttyCAB-{count}"
    state = work / f"state-{count}"
    state.mkdir()
    fill_backlog(state / DATABASE_NAME, count)
    with simulator_process(sim, link, SIM_LIFETIME_S):
        config = work / f"backlog-{count}.toml"
        write_toml(config, gateway_config(state, str(link), free_port()))
        with gateway_process(config, work / f"backlog-{count}.log") as gateway:
            time.sleep(SETTLE_S)
            return rss_bytes(gateway.pid)


def run(quick: bool) -> tuple[BenchResult, list[str]]:
    idle_s = QUICK_IDLE_S if quick else FULL_IDLE_S
    backlogs = QUICK_BACKLOGS if quick else FULL_BACKLOGS
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as workdir:
        work = Path(workdir)
        cpu_percent, idle_rss = measure_idle(work, idle_s)
        backlog_rss = {count: measure_backlog(work, count) for count in backlogs}

    growth = backlog_rss[backlogs[-1]] - backlog_rss[backlogs[0]]
    largest_rss = max(idle_rss, *backlog_rss.values())
    summary = [
        f"footprint: daemon process, {BOARDS * SLOTS_PER_BOARD}-slot simulator, "
        f"idle window {idle_s:.0f} s after {SETTLE_S:.0f} s settling",
        f"  idle CPU: {cpu_percent:.3f} % of one core",
        f"  idle RSS, connected: {idle_rss / MB:.1f} MB",
    ]
    summary.extend(
        f"  RSS offline with {count} buffered events: {rss / MB:.1f} MB"
        for count, rss in backlog_rss.items()
    )
    summary.append(
        f"  RSS growth from {backlogs[0]} to {backlogs[-1]} events: {growth / MB:.1f} MB"
    )
    met = (
        cpu_percent < CPU_TARGET_PERCENT
        and largest_rss < RSS_TARGET_MB * MB
        and growth < GROWTH_TARGET_MB * MB
    )
    result = BenchResult(
        name="footprint",
        value=cpu_percent,
        unit="% of one core",
        baseline=CPU_TARGET_PERCENT,
        ratio=safe_ratio(cpu_percent, CPU_TARGET_PERCENT),
        target=(
            f"CPU < {CPU_TARGET_PERCENT} %, RSS < {RSS_TARGET_MB:.0f} MB, "
            f"RSS growth to {backlogs[-1]} events < {GROWTH_TARGET_MB:.0f} MB"
        ),
        met=met,
    )
    return result, summary
