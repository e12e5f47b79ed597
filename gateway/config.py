"""Daemon configuration: one TOML file, overridable by environment variables.

Environment variables start with `CABINET_GATEWAY_` and use `__` between nested keys, for
example `CABINET_GATEWAY_MQTT__HOST=broker.example` or `CABINET_GATEWAY_CABINET__ID=C-0001`.
They take precedence over the file.
"""

from __future__ import annotations

import errno
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from cloud_link import CloudConfig
from firmware_bridge import BridgeConfig
from gateway.i18n import _

ENV_PREFIX = "CABINET_GATEWAY_"
DEFAULT_CONFIG_PATH = Path("/etc/cabinet-gateway/gateway.toml")
EXAMPLE_CONFIG_PATH = Path(__file__).parent / "gateway.example.toml"


class ConfigError(Exception):
    """An invalid configuration; the message lists every problem with key, value and fix."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration in {source}:\n  " + "\n  ".join(problems))


class _SharedCabinetId(str):
    """`cabinet.id` copied into `mqtt.cabinet_id`, so that its errors are reported only once."""


class CabinetSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Cabinet id, as the cloud knows it."
    )
    state_dir: Path = Field(
        default=Path("/var/lib/cabinet-gateway"),
        description="Directory of the SQLite state file and the instance lock.",
    )
    low_stock_threshold: int = Field(
        default=2, ge=0, le=255, description="Low-stock event when rentable banks fall below this."
    )
    min_free_slots: int = Field(
        default=1,
        ge=0,
        le=255,
        description="Low-stock event when free slots for returns fall below this.",
    )
    battery_report_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="Minimum time between two battery-health reports of a bank.",
    )
    shutdown_eject_wait_s: float = Field(
        default=40.0, ge=0, description="On SIGTERM, how long a running eject may take to finish."
    )


class ControlSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    socket: Path = Field(
        default=Path("/run/cabinet-gateway/control.sock"), description="Local control socket."
    )
    group: str | None = Field(
        default=None, description="Group that may use the control socket (mode 0660)."
    )


class LogSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class CliSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lang: Literal["zh-CN", "en"] | None = Field(
        default=None, description="Language of the CLI; unset means the locale decides."
    )


class GatewayConfig(BaseSettings):
    """The whole daemon configuration. `mqtt.cabinet_id` is taken from `cabinet.id`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    cabinet: CabinetSection
    serial: BridgeConfig
    mqtt: CloudConfig
    control: ControlSection = Field(default_factory=ControlSection)
    log: LogSection = Field(default_factory=LogSection)
    cli: CliSection = Field(default_factory=CliSection)

    @model_validator(mode="before")
    @classmethod
    def _share_cabinet_id(cls, data: Any) -> Any:
        if isinstance(data, dict):
            cabinet = data.get("cabinet")
            mqtt = data.get("mqtt")
            if isinstance(cabinet, dict) and isinstance(mqtt, dict) and "id" in cabinet:
                shared = cabinet["id"]
                if isinstance(shared, str):
                    shared = _SharedCabinetId(shared)
                mqtt.setdefault("cabinet_id", shared)
        return data

    @model_validator(mode="after")
    def _check_ids_agree(self) -> Self:
        if self.mqtt.cabinet_id != self.cabinet.id:
            raise ValueError(
                f"mqtt.cabinet_id {self.mqtt.cabinet_id!r} differs from cabinet.id "
                f"{self.cabinet.id!r}; remove mqtt.cabinet_id"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)

    @property
    def database_path(self) -> Path:
        return self.cabinet.state_dir / "cloud_link.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.cabinet.state_dir / "gateway.lock"


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a TOML config; raise ConfigError naming every invalid key."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        problem = _(
            "file {path} not found. Check the path given with --config (default {default}).",
            path=str(path),
            default=str(DEFAULT_CONFIG_PATH),
        )
        raise ConfigError(str(path), [problem]) from None
    except OSError as exc:
        problem = _("cannot read the file: {error}", error=exc.strerror)
        raise ConfigError(str(path), [problem]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [_("not valid TOML: {error}", error=str(exc))]) from None
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], *, source: str = "<config>") -> GatewayConfig:
    overrides = sorted(name for name in os.environ if name.upper().startswith(ENV_PREFIX))
    if overrides:
        source = f"{source} or the environment ({', '.join(overrides)})"
    try:
        return GatewayConfig(**data)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc)) from None
    except SettingsError as exc:
        # pydantic-settings reads a nested section from one variable as JSON.
        raise ConfigError(
            source, [f"{exc}; a whole section set by one variable must be JSON"]
        ) from None


def describe_errors(exc: ValidationError) -> list[str]:
    """Turn pydantic errors into lines of `key: problem (got value)`."""
    lines = []
    for error in exc.errors():
        if isinstance(error.get("input"), _SharedCabinetId):
            continue  # the same error is listed under cabinet.id, the key the user wrote
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling against the example config"
        elif error["type"] == "missing":
            message = "missing; this key is required"
        value = error.get("input")
        shown = "" if error["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{key}: {message}{shown}")
    return lines


def state_dir_problem(state_dir: Path, error: OSError) -> str:
    """Describe, translated, why the daemon cannot create or write to `state_dir`."""
    detail = f"{error.strerror}: {error.filename}" if error.filename else str(error)
    return _(
        "cabinet.state_dir: cannot create or write to the directory {path} ({error}). "
        "Create it and make it writable for the user that runs the gateway.",
        path=str(state_dir),
        error=detail,
    )


def _check_state_dir(config: GatewayConfig) -> list[str]:
    """Report a state directory that the daemon could not create or write to.

    Nothing is created: the check looks at the directory, or at its nearest existing parent
    when the directory does not exist yet, with the permissions of the user running the check.
    """
    state_dir = config.cabinet.state_dir
    for candidate in (state_dir, *state_dir.parents):
        try:
            mode = candidate.stat().st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:  # NotADirectoryError below a regular file, PermissionError
            return [state_dir_problem(state_dir, exc)]
        if not stat.S_ISDIR(mode):
            error = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(candidate))
            return [state_dir_problem(state_dir, error)]
        if not os.access(candidate, os.W_OK | os.X_OK):
            error = OSError(errno.EACCES, os.strerror(errno.EACCES), str(candidate))
            return [state_dir_problem(state_dir, error)]
        break
    problems = []
    for path in (config.database_path, config.lock_path):
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            error = OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            problems.append(state_dir_problem(state_dir, error))
    return problems


def check_resources(config: GatewayConfig, *, strict: bool = True) -> list[str]:
    """Return problems the schema cannot see, translated: state directory, TLS files, keys.

    `strict` also reports an empty key list, which leaves the daemon working but unable to
    accept any command.
    """
    from cloud_link import SigningError
    from cloud_link.signing import load_trusted_keys

    problems = _check_state_dir(config)
    tls = config.mqtt.tls
    if tls.enabled:
        for key, path in (
            ("mqtt.tls.ca_file", tls.ca_file),
            ("mqtt.tls.cert_file", tls.cert_file),
            ("mqtt.tls.key_file", tls.key_file),
        ):
            if path is not None and not path.is_file():
                problems.append(
                    _(
                        "{key}: file {path} not found; install it or fix the path",
                        key=key,
                        path=path,
                    )
                )
    try:
        load_trusted_keys(config.mqtt.commands.trusted_keys)
    except SigningError as exc:
        problems.append(
            _(
                "mqtt.commands.trusted_keys: {error}; use the base64 that 'cloud keygen' prints",
                error=str(exc),
            )
        )
    # Without keys the cabinet still reports returns, so only `config check` treats it as an error.
    if strict and not config.mqtt.commands.trusted_keys:
        problems.append(
            _(
                "mqtt.commands.trusted_keys: empty, so every command will be rejected; "
                "add the cloud's Ed25519 public key"
            )
        )
    return problems
