"""Wall-clock synchronisation sources."""

from __future__ import annotations

from pathlib import Path

from cloud_link import ClockSync, SystemClock


def test_marker_file_decides_sync(tmp_path: Path) -> None:
    marker = tmp_path / "synchronized"
    clock = SystemClock(ClockSync.MARKER_FILE, marker)
    before = clock.wall_synchronised()
    marker.touch()
    after = clock.wall_synchronised()

    assert before is False
    assert after is True


def test_fixed_modes(tmp_path: Path) -> None:
    assert SystemClock(ClockSync.SYNCHRONISED).wall_synchronised() is True
    assert SystemClock(ClockSync.UNSYNCHRONISED, tmp_path).wall_synchronised() is False
