"""Formatting of values for people: times, durations, sizes, units and missing values."""

from __future__ import annotations

from datetime import datetime

from gateway.i18n import _

MISSING = "—"


def timestamp(at: float | None) -> str:
    """Format a wall-clock UNIX time in the cabinet's local time zone."""
    if at is None:
        return MISSING
    return datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    whole = int(seconds)
    if whole < 60:
        return _("{seconds} s", seconds=round(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return _("{days} d {clock}", days=days, clock=clock) if days else clock


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # not reached


def percent(value: int | None) -> str:
    return MISSING if value is None else f"{value} %"


def celsius(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f} °C"


def volts(millivolts: int | None) -> str:
    return MISSING if millivolts is None else f"{millivolts / 1000:.2f} V"


def milliamps(value: int | None) -> str:
    return MISSING if value is None else f"{value} mA"


def milliamp_hours(value: int | None) -> str:
    return MISSING if value is None else f"{value} mAh"


def milliseconds(seconds: float | None) -> str:
    return MISSING if seconds is None else f"{seconds * 1000:.0f} ms"


def text(value: object | None) -> str:
    return MISSING if value is None or value == "" else str(value)


def yes_no(value: bool) -> str:
    return _("yes") if value else _("no")
