"""Settings of the firmware bridge: serial port, boards, polling, timing and cabinet rules."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.slotbus.constants import (
    MAX_ADDRESS,
    MAX_SLOTS_PER_BOARD,
    MAX_UNLOCK_WINDOW_S,
    MIN_ADDRESS,
    MIN_UNLOCK_WINDOW_S,
    SETTLE_AFTER_EJECT_S,
)


class EchoMode(StrEnum):
    """Treatment of the bridge's own transmission read back by a half-duplex adapter."""

    AUTO = "auto"  # discard a received copy of the request just written, if one arrives
    ON = "on"  # the adapter echoes; handled like AUTO (a missing echo is not reported)
    OFF = "off"  # no echo expected; a received request frame is counted as foreign traffic


class BoardSpec(BaseModel):
    """One slot-controller board on the bus.

    `slot_count` is configured, not only read from IDENTIFY, so that global slot numbers stay
    the same when a board is offline at startup.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # 0 is valid only for S1TT boards, which are numbered from 0; BridgeConfig checks that.
    address: int = Field(ge=0, le=MAX_ADDRESS)
    slot_count: int = Field(ge=1, le=MAX_SLOTS_PER_BOARD)


class BackoffConfig(BaseModel):
    """Capped exponential backoff with full jitter, in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=0.2, gt=0)
    max_s: float = Field(default=10.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1, description="fraction of each delay randomised")

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class BridgeConfig(BaseModel):
    """Everything the bridge needs; defaults suit a 115200-baud bus with a few boards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: str = Field(description="pyserial URL: /dev/ttyS1, a pty path or socket://HOST:PORT")
    protocol: Literal["native", "gzxj", "s1tt"] = Field(
        default="native",
        description="wire protocol of the slot hardware: slot-bus v1, a GZXJ station or S1TT",
    )
    baudrate: int = Field(default=115200, gt=0)
    stopbits: int = Field(default=1, ge=1, le=2)
    boards: tuple[BoardSpec, ...] = Field(min_length=1)

    rentable_min_charge: int = Field(default=80, ge=0, le=100, description="percent")
    unlock_window_s: int = Field(default=30, ge=MIN_UNLOCK_WINDOW_S, le=MAX_UNLOCK_WINDOW_S)
    overheat_limit_c: float = Field(default=60.0, description="a bank at or above is not rented")
    retire_health_pct: int = Field(default=70, ge=0, le=100, description="SoH below -> retire")
    settle_s: float = Field(default=SETTLE_AFTER_EJECT_S, ge=0)

    event_poll_interval_s: float = Field(
        default=0.3, gt=0, lt=1.0, description="event polling of a busy board, seconds"
    )
    idle_event_poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=5.0,
        description="event polling of a quiet board, seconds: the longest delay of a return",
    )
    idle_after_s: float = Field(
        default=10.0, ge=0, description="a board with no event for this long counts as quiet"
    )
    status_interval_s: float = Field(default=5.0, gt=0)
    bank_interval_s: float = Field(default=60.0, gt=0)
    bus_budget: float = Field(
        default=0.5, gt=0, le=1.0, description="largest share of bus time that polling may use"
    )

    reply_margin_s: float = Field(
        default=0.05, ge=0, description="added to wire time and board allowance per request"
    )
    retries: int = Field(default=2, ge=0, le=10, description="repeats after a timeout, online")
    offline_retries: int = Field(default=0, ge=0, le=10, description="repeats, offline board")
    degraded_after: int = Field(default=1, ge=1, description="consecutive failures -> degraded")
    offline_after: int = Field(default=3, ge=1, description="consecutive failures -> offline")
    probe_backoff: BackoffConfig = Field(
        default_factory=lambda: BackoffConfig(initial_s=0.5, max_s=30.0)
    )
    reopen_backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    port_check_interval_s: float = Field(
        default=1.0, gt=0, le=2.0, description="how often a device path is checked to exist"
    )
    echo: EchoMode = EchoMode.AUTO
    eject_resolve_margin_s: float = Field(
        default=5.0, ge=0, description="added to the take window before an eject gives up"
    )

    @model_validator(mode="after")
    def _check_poll_intervals(self) -> Self:
        if self.idle_event_poll_interval_s < self.event_poll_interval_s:
            raise ValueError(
                f"idle_event_poll_interval_s ({self.idle_event_poll_interval_s}) must be at "
                f"least event_poll_interval_s ({self.event_poll_interval_s})"
            )
        return self

    @model_validator(mode="after")
    def _check_boards(self) -> Self:
        addresses = [board.address for board in self.boards]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"board addresses must be unique, got {addresses}")
        if self.protocol != "s1tt" and min(addresses) < MIN_ADDRESS:
            raise ValueError(
                f"board address 0 is valid only with protocol s1tt; {self.protocol} boards use "
                f"{MIN_ADDRESS}..{MAX_ADDRESS}"
            )
        return self

    @property
    def slot_count(self) -> int:
        """Number of slots in the cabinet; global slot numbers are 1..slot_count."""
        return sum(board.slot_count for board in self.boards)
