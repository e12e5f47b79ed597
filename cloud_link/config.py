"""Configuration of the cloud link: broker, TLS, topics, outbox and command limits."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

CabinetId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class TlsConfig(BaseModel):
    """TLS settings. Plain TCP is used only when `enabled` is explicitly false."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_hostname: str | None = Field(
        default=None,
        description="Name to verify in the broker certificate when it differs from the host.",
    )

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        if not self.enabled:
            return self
        if self.ca_file is None:
            raise ValueError("tls.ca_file is required when TLS is enabled")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        return self


class OutboxLimits(BaseModel):
    """Bounds of the SQLite outbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=8 * 1024 * 1024, ge=4096, description="Payload bytes stored.")
    telemetry_share: float = Field(
        default=0.25,
        gt=0.0,
        lt=1.0,
        description="Share of max_bytes that telemetry may use; the rest is reserved for "
        "command results, security and transactional events.",
    )
    max_in_flight: int = Field(default=8, ge=1, le=1000, description="Unacknowledged publishes.")
    max_message_bytes: int = Field(
        default=64 * 1024, ge=512, description="Larger payloads go straight to dead letters."
    )
    keep_without_subscribers: bool = Field(
        default=True,
        description="On an MQTT 5 PUBACK 'no matching subscribers', keep a non-telemetry "
        "message and retry it later instead of removing it.",
    )
    no_subscriber_retry_s: float = Field(default=30.0, gt=0.0)
    max_publish_attempts: int = Field(
        default=5,
        ge=1,
        description="Connection losses a message may cause while sent alone before it is "
        "dead-lettered; guards against brokers that disconnect instead of rejecting.",
    )


class ClockSync(StrEnum):
    """Method the link uses to decide whether the wall clock is synchronised."""

    SYNCHRONISED = "synchronised"
    UNSYNCHRONISED = "unsynchronised"
    MARKER_FILE = "marker_file"  # synchronised while `clock_marker_file` exists


class CommandSettings(BaseModel):
    """Verification limits of signed cloud commands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trusted_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Ed25519 public keys by key id, as base64 of the 32 raw bytes or as PEM.",
    )
    max_clock_skew_s: float = Field(default=30.0, ge=0.0)
    max_lifetime_s: float = Field(
        default=300.0, gt=0.0, description="Longest allowed time between issue and deadline."
    )
    max_payload_bytes: int = Field(default=8192, ge=512)
    max_rejections_per_minute: int = Field(
        default=30,
        ge=1,
        description="Rejection results and security events for unauthenticated payloads; "
        "a flood beyond this is counted, not published.",
    )
    max_json_depth: int = Field(default=12, ge=4)
    clock_sync: ClockSync = ClockSync.MARKER_FILE
    clock_marker_file: Path = Path("/run/systemd/timesync/synchronized")
    retention_s: float = Field(
        default=7 * 24 * 3600.0, description="How long finished command results are kept."
    )
    max_stored: int = Field(default=10_000, ge=100, description="Finished commands kept at most.")

    @model_validator(mode="after")
    def _check_retention(self) -> Self:
        # A redelivered command must still find its stored result until its deadline passed.
        if self.retention_s < 2 * self.max_lifetime_s:
            raise ValueError("commands.retention_s must be at least twice max_lifetime_s")
        return self


class CloudConfig(BaseModel):
    """Everything the cloud link needs to reach the broker and to judge commands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cabinet_id: CabinetId
    host: str
    port: int = Field(default=8883, ge=1, le=65535)
    mqtt_version: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(default=60, ge=5, le=65535)
    client_id: str | None = Field(default=None, description="Defaults to 'cabinet-<cabinet_id>'.")
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    topic_prefix: str = Field(default="cabinets", pattern=r"^[A-Za-z0-9_./-]{1,128}$")
    session_expiry_s: int = Field(
        default=3600, ge=0, description="MQTT 5 session expiry; 3.1.1 uses a persistent session."
    )
    will_delay_s: int = Field(
        default=30, ge=0, description="MQTT 5 will delay, so a short reconnect is not an outage."
    )
    heartbeat_interval_s: float = Field(default=300.0, gt=0.0)
    connect_timeout_s: float = Field(
        default=30.0, gt=0.0, description="Seconds to wait for TCP, TLS and CONNACK."
    )
    reconnect_min_s: float = Field(default=1.0, gt=0.0)
    reconnect_max_s: float = Field(default=300.0, gt=0.0)
    flap_window_s: float = Field(
        default=10.0, gt=0.0, description="A disconnect this soon after CONNACK counts as a flap."
    )
    flap_limit: int = Field(default=3, ge=1, description="Flaps in a row before the long backoff.")
    shutdown_flush_s: float = Field(default=5.0, ge=0.0)
    outbox: OutboxLimits = Field(default_factory=OutboxLimits)
    commands: CommandSettings = Field(default_factory=CommandSettings)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"cabinet-{self.cabinet_id}"

    @model_validator(mode="after")
    def _check_topic_prefix(self) -> Self:
        if self.topic_prefix.startswith("/") or self.topic_prefix.endswith("/"):
            raise ValueError("topic_prefix must not start or end with '/'")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self
