"""The console entry point: `run` builds a command line without the diagnostics screens."""

from __future__ import annotations

import subprocess
import sys

LOADED_BY_RUN = """
import sys
import typer
from gateway.cli_daemon import register_run
from gateway.cli_help import TranslatedGroup
import gateway.daemon

app = typer.Typer(cls=TranslatedGroup, add_completion=False)
register_run(app)
heavy = ("rich", "gateway.cli_diag", "gateway.demo", "cabinet_sim", "sqlite_utils")
print(sorted(name for name in sys.modules if name.split(".")[0] in heavy or
             name.startswith(heavy)))
"""


def test_run_path_loads_no_screens() -> None:
    output = subprocess.run(
        [sys.executable, "-c", LOADED_BY_RUN], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == "[]"


def test_entry_runs_full_cli_for_other_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from gateway.entry import main; main()", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0
    assert "status" in result.stdout
    assert "run" in result.stdout


def test_entry_run_help_names_config_option() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from gateway.entry import main; main()", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0
    assert "--config" in result.stdout
