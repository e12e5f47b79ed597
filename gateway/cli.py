"""Console entry point of cabinet-gateway (`cabinet-gateway`, short alias `cgw`)."""

from __future__ import annotations

import typer

from gateway import cli_daemon, cli_diag
from gateway.cli_help import TranslatedGroup

app = typer.Typer(
    cls=TranslatedGroup,
    no_args_is_help=True,
    help="Gateway daemon for shared power-bank cabinets.",
)
cli_daemon.register(app)
cli_diag.register(app)


def main() -> None:
    app()
