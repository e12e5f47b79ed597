"""The benchmark runner's output contract, checked on the cheapest benchmark in quick mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 90.0
KEYS = {"name", "value", "unit", "baseline", "ratio", "target", "met"}


def test_outbox_quick_prints_json_last() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "outbox", "--quick"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) >= 2, completed.stdout
    result = json.loads(lines[-1])
    assert set(result) == KEYS
    assert result["name"] == "outbox"
    assert isinstance(result["value"], float)
    assert result["value"] > 0
    assert isinstance(result["baseline"], float)
    assert result["baseline"] > 0
    assert result["ratio"] == pytest.approx(result["value"] / result["baseline"], rel=1e-4)
    assert isinstance(result["unit"], str)
    assert isinstance(result["target"], str)
    assert isinstance(result["met"], bool)


def test_unknown_benchmark_is_rejected() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "nosuch"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert completed.returncode == 2
    assert "invalid choice" in completed.stderr
