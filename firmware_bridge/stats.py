"""Bus statistics for diagnostics and the cloud."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LATENCY_SAMPLES = 256
"""Reply latencies kept per board for the percentiles."""


@dataclass(frozen=True, slots=True)
class BoardBusStats:
    address: int
    requests: int
    replies: int
    timeouts: int
    retries: int
    errors: int  # non-OK status answers
    latency_p50_s: float | None
    latency_p99_s: float | None


@dataclass(frozen=True, slots=True)
class BusStats:
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    bytes_dropped: int  # garbage and partial frames discarded by the deframer
    crc_errors: int
    timeouts: int
    retries: int
    echoes: int  # own frames read back and discarded
    foreign_frames: int  # request frames read back when no echo was expected
    unmatched_replies: int  # replies with no pending request (late or for another sequence)
    latency_p50_s: float | None
    latency_p99_s: float | None
    reopens: int
    port_open: bool
    boards: tuple[BoardBusStats, ...]


def percentile(samples: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of `samples`, or None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(slots=True)
class BoardCounters:
    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    retries: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def freeze(self, address: int) -> BoardBusStats:
        samples = list(self.latencies)
        return BoardBusStats(
            address=address,
            requests=self.requests,
            replies=self.replies,
            timeouts=self.timeouts,
            retries=self.retries,
            errors=self.errors,
            latency_p50_s=percentile(samples, 0.5),
            latency_p99_s=percentile(samples, 0.99),
        )


@dataclass(slots=True)
class BusCounters:
    frames_sent: int = 0
    bytes_sent: int = 0
    echoes: int = 0
    foreign_frames: int = 0
    unmatched_replies: int = 0
    reopens: int = 0
    boards: dict[int, BoardCounters] = field(default_factory=dict)

    def board(self, address: int) -> BoardCounters:
        return self.boards.setdefault(address, BoardCounters())
