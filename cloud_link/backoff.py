"""Reconnect pacing: capped exponential backoff with jitter, and flap detection."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Full-jitter exponential backoff: the n-th delay is uniform in [min, min(max, min*2**n)]."""

    min_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self.rng.uniform(self.min_s, max(ceiling, self.min_s))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class FlapDetector:
    """Counts disconnects that follow CONNACK within `window_s`.

    Repeated flaps usually mean another client uses the same client id, so each takes the
    session from the other; `flapping` then asks for the long backoff.
    """

    window_s: float
    limit: int
    consecutive: int = 0
    total: int = 0

    def connection_ended(self, connected_for_s: float) -> None:
        if connected_for_s < self.window_s:
            self.consecutive += 1
            self.total += 1
        else:
            self.consecutive = 0

    @property
    def flapping(self) -> bool:
        return self.consecutive >= self.limit
