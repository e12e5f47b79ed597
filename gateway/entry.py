"""Console entry point of `cabinet-gateway` and `cgw`.

`cabinet-gateway run` is the long-running daemon, so it builds a command line with only that
command: the diagnostics screens (rich and the renderers, about 4 MB of RSS) stay out of the
daemon's memory. Every other command gets the full command line of `gateway.cli`.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] != ["run"]:
        from gateway.cli import main as full_main

        full_main()
        return

    import typer

    from gateway.cli_daemon import register_run
    from gateway.cli_help import TranslatedGroup

    app = typer.Typer(cls=TranslatedGroup, add_completion=False)

    @app.callback()
    def root() -> None:
        """Gateway daemon for shared power-bank cabinets."""

    register_run(app)
    app()
