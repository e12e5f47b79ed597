"""Per-board link state (online, degraded, offline) and the board's polling bookkeeping."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace

from firmware_bridge.config import BackoffConfig, BoardSpec
from protocol.cabinet import LinkState
from protocol.slotbus import Capability, Identity

logger = logging.getLogger(__name__)


def backoff_delay(backoff: BackoffConfig, attempt: int, rng: random.Random) -> float:
    """Return the delay before retry number `attempt` (0-based): capped, with jitter."""
    base = min(backoff.max_s, backoff.initial_s * (1 << min(attempt, 30)))
    spread = base * backoff.jitter
    return max(0.0, base - spread + rng.random() * 2 * spread)


@dataclass(frozen=True, slots=True)
class LinkChange:
    previous: LinkState
    state: LinkState
    reason: str


@dataclass(slots=True)
class BoardLink:
    """State of one board as the bridge sees it, and when the board next needs the bus."""

    spec: BoardSpec
    first_slot: int  # global number of the board's slot 1
    state: LinkState = LinkState.OFFLINE
    reason: str = "not contacted yet"
    identity: Identity | None = None
    failures: int = 0  # consecutive failed exchanges
    probe_attempts: int = 0
    next_probe_at: float = 0.0
    contacted: bool = False  # replied at least once, or was declared offline after trying
    status_read: bool = False  # GET_SLOTS replied since the bridge started
    last_dropped: int | None = None  # EventBatch.dropped of the current boot
    last_event_id: int = 0  # highest event id handed on in the current boot
    next_events_at: float = 0.0
    active_until: float = 0.0  # events are polled at the short interval until then
    next_status_at: float = 0.0
    next_bank_at: float = 0.0
    bank_cursor: int = 0
    banks_read: bool = False  # the whole board's GET_BANKS was sent since the bridge started
    reconcile_needed: bool = False
    stored_boot_count: int | None = None  # boot_count of the watermark loaded at startup
    reported: bool = False  # the link state was emitted at least once
    pending_bank_reads: set[int] = field(default_factory=set)  # board slot numbers
    charge_on_pending: set[int] = field(default_factory=set)  # returned banks to charge
    status_pending: set[int] = field(default_factory=set)  # board slots to read status of soon
    ack_up_to: int = 0  # events handed on but not acknowledged yet (ACK_AND_READ_EVENTS)
    ack_boot_count: int = 0  # the boot that ack_up_to belongs to

    @property
    def address(self) -> int:
        return self.spec.address

    @property
    def slot_count(self) -> int:
        """Usable slots: the configured count, reduced when the board reports fewer."""
        if self.identity is None:
            return self.spec.slot_count
        return min(self.spec.slot_count, self.identity.slot_count)

    def global_slot(self, board_slot: int) -> int:
        return self.first_slot + board_slot - 1

    def supports(self, capability: Capability) -> bool:
        """Return whether the board's last IDENTIFY reported `capability`."""
        return self.identity is not None and capability in self.identity.capabilities

    def drop_capability(self, capability: Capability, command: str) -> None:
        """Clear a capability whose command the board rejected as unknown, until the board's
        next IDENTIFY."""
        if self.identity is None:
            return
        logger.warning(
            "board %d returned UNKNOWN_COMMAND for %s although it reported %s; using the "
            "version-2 command until the board identifies again",
            self.address,
            command,
            capability.name,
        )
        self.identity = replace(
            self.identity, capabilities=self.identity.capabilities & ~capability
        )

    def record_success(self) -> LinkChange | None:
        self.failures = 0
        self.probe_attempts = 0
        self.contacted = True
        reason = ""
        if self.identity is not None and self.identity.slot_count != self.spec.slot_count:
            reason = (
                f"board reports {self.identity.slot_count} slots, configured {self.spec.slot_count}"
            )
        target = LinkState.DEGRADED if reason else LinkState.ONLINE
        return self._move(target, reason)

    def record_failure(
        self, reason: str, degraded_after: int, offline_after: int
    ) -> LinkChange | None:
        self.failures += 1
        if self.failures >= offline_after:
            self.contacted = True
            return self._move(LinkState.OFFLINE, reason)
        if self.failures >= degraded_after and self.state is LinkState.ONLINE:
            return self._move(LinkState.DEGRADED, reason)
        return None

    def mark_offline(self, reason: str) -> LinkChange | None:
        self.contacted = True
        return self._move(LinkState.OFFLINE, reason)

    def _move(self, state: LinkState, reason: str) -> LinkChange | None:
        """Set the state; return a change to emit when the state moved or was never reported."""
        change = LinkChange(self.state, state, reason)
        self.state = state
        self.reason = reason
        if change.previous is state and self.reported:
            return None
        self.reported = True
        return change
