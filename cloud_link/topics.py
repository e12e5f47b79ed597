"""Topic layout: one namespace per cabinet under a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Topics of one cabinet, `<prefix>/<cabinet_id>/...`."""

    prefix: str
    cabinet_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.cabinet_id}"

    @property
    def status(self) -> str:
        """Retained `online`/`offline`; the offline value is the MQTT will."""
        return f"{self.base}/status"

    @property
    def birth(self) -> str:
        return f"{self.base}/birth"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def stock(self) -> str:
        return f"{self.base}/stock"

    @property
    def battery(self) -> str:
        return f"{self.base}/battery"

    @property
    def heartbeat(self) -> str:
        return f"{self.base}/heartbeat"

    def event(self, kind: str) -> str:
        return f"{self.base}/event/{kind}"

    @property
    def command(self) -> str:
        """Cloud to cabinet: signed command requests."""
        return f"{self.base}/cmd"

    @property
    def command_result(self) -> str:
        return f"{self.base}/cmd/result"
