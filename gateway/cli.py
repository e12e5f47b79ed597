"""Console entry point of cabinet-gateway.

NOTE: placeholder with only the diagnostics commands. The daemon's own commands (`run`,
`config check`, `sim`, `demo`, `cloud`) are added here by the daemon work.
"""

from __future__ import annotations

import typer

from gateway.cli_diag import register

app = typer.Typer(no_args_is_help=True, help="Gateway daemon for shared power-bank cabinets.")
register(app)


def main() -> None:
    app()
