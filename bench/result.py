"""The result of one benchmark: a readable summary, then one JSON line for machines."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One measured figure against the peer or limit measured in the same run.

    `target` states the condition in words and numbers, for example "ratio <= 1.15";
    `met` is whether this run satisfied it.
    """

    name: str
    value: float
    unit: str
    baseline: float
    ratio: float
    target: str
    met: bool

    def json_line(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "value": round(self.value, 6),
                "unit": self.unit,
                "baseline": round(self.baseline, 6),
                "ratio": round(self.ratio, 6),
                "target": self.target,
                "met": self.met,
            }
        )


def report(result: BenchResult, summary: list[str]) -> None:
    """Print the summary lines, the verdict, and the JSON object as the last line."""
    for line in summary:
        print(line)
    verdict = "met" if result.met else "MISSED"
    print(
        f"{result.name}: {result.value:.6g} {result.unit} against baseline "
        f"{result.baseline:.6g}, ratio {result.ratio:.4g}; target {result.target}: {verdict}"
    )
    print(result.json_line(), flush=True)


def safe_ratio(value: float, baseline: float) -> float:
    """Return value / baseline, or infinity when the baseline is zero."""
    return value / baseline if baseline else float("inf")
