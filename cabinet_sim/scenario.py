"""Scenario files (TOML): a cabinet, how its users behave, and control commands at given times.

name = "Busy weekday"
duration = "08:00:00"          # optional; the run stops after this much simulation time

[cabinet]                      # any SimConfig field, nested tables for charging/banks/faults
boards = 4
slots_per_board = 6
seed = 42

[users]                        # UserBehaviour fields
take_probability = 0.9
returns_per_hour = 6

[[at]]                         # a control command (see `help`) at a simulation time
time = "00:30:00"              # "HH:MM:SS", "MM:SS" or seconds
command = "fault 5 lock_stuck on"
"""

from __future__ import annotations

import logging
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.config import SimConfig
from cabinet_sim.control import ControlError, Controller
from cabinet_sim.users import UserBehaviour

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "scenarios"


class ScenarioError(Exception):
    """A scenario file that cannot be read or is invalid."""


def parse_duration(value: float | int | str) -> float:
    """Return seconds from a number of seconds or an "HH:MM:SS" / "MM:SS" string."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        parts = value.strip().split(":")
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"time {value!r} is not HH:MM:SS, MM:SS or seconds")
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
    if seconds < 0:
        raise ValueError(f"time {value!r} is negative")
    return seconds


class TimedCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time: float
    """Seconds of simulation time after the start."""
    command: str

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("command")
    @classmethod
    def _known_command(cls, value: str) -> str:
        words = shlex.split(value)
        if not words or words[0] not in Controller.NAMES:
            raise ValueError(f"unknown control command {value!r}")
        return value


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    duration: float | None = None
    cabinet: dict[str, Any] = Field(default_factory=dict)
    users: UserBehaviour = UserBehaviour()
    at: tuple[TimedCommand, ...] = ()

    @field_validator("duration", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @classmethod
    def load(cls, path: Path) -> Scenario:
        try:
            with path.open("rb") as file:
                data = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
        try:
            scenario = cls.model_validate(data)
            scenario.config()
        except ValidationError as exc:
            raise ScenarioError(f"invalid scenario {path}: {exc}") from exc
        return scenario

    def config(self, **overrides: Any) -> SimConfig:
        """Return the cabinet's SimConfig, with `overrides` (None values ignored) on top."""
        values = dict(self.cabinet)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return SimConfig.model_validate(values)

    def start(self, cabinet: Cabinet, controller: Controller) -> None:
        """Schedule every timed command on the cabinet's timeline, relative to now."""
        start = cabinet.now
        for timed in self.at:
            cabinet.schedule(start + timed.time, _runner(controller, timed))


def _runner(controller: Controller, timed: TimedCommand) -> Callable[[], None]:
    def run() -> None:
        try:
            reply = controller.execute(timed.command)
        except ControlError as exc:
            logger.warning(
                "scenario command %r at %.0f s failed: %s", timed.command, timed.time, exc
            )
            return
        logger.info("scenario at %.0f s: %s -> %s", timed.time, timed.command, reply)

    return run
