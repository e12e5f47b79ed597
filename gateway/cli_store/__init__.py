"""`cabinet-gateway store`: read the daemon's state file while the daemon is stopped.

The diagnostics commands ask the running daemon over its control socket. These commands read
the SQLite file in `cabinet.state_dir` themselves, so a technician can see the outbox, the
commands in progress, the orders and the disabled slots when the daemon is stopped or
crash-looping. `state_file` reads the file, `render` shows it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from gateway.cli_daemon import load_or_exit
from gateway.cli_diag.session import CONFIG_ENV, EXIT_FAILED, EXIT_USAGE
from gateway.cli_help import TranslatedCommand, TranslatedGroup
from gateway.cli_options import LangOption
from gateway.cli_store.render import orders_table, render_summary, summary_json
from gateway.cli_store.state_file import StateFileError, open_state_file, read_orders, read_summary
from gateway.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from gateway.i18n import N_, Language, _, activate, resolve_language

store_app = typer.Typer(cls=TranslatedGroup, no_args_is_help=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar=CONFIG_ENV,
        help=N_("Path of the gateway's TOML configuration file."),
    ),
]
StateFileOption = Annotated[
    Path | None,
    typer.Option(
        "--state-file",
        help=N_("Read this state file instead of the one in the config's cabinet.state_dir."),
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help=N_("Print the output as JSON for scripts and support."))
]


@dataclass
class Output:
    """Output of one command: rich text for people, or one JSON document for scripts."""

    json: bool
    out: Console
    err: Console

    @classmethod
    def create(cls, json_output: bool) -> Output:
        # Markup is off because cells contain stored data ("[/]" in a reason must print as is).
        out = Console(highlight=False, markup=False)
        return cls(json_output, out, Console(stderr=True, highlight=False, markup=False))

    def print_json(self, value: object) -> None:
        self.out.print_json(json.dumps(value, ensure_ascii=False), indent=2)

    def fail(self, code: str, text: str, detail: str, exit_code: int = EXIT_FAILED) -> NoReturn:
        """Report an error and exit with `exit_code`.

        People get the translated `text` on stderr, followed by the English `detail` except for
        a missing state file, whose text names the path already. `--json` prints the code and
        the detail on stdout.
        """
        if self.json:
            self.print_json({"error": {"code": code, "message": detail}})
        else:
            self.err.print(Text(_("Error: {message}", message=text), style="bold red"))
            if code != "state_missing":
                self.err.print(Text(f"  {detail}", style="dim"))
        raise typer.Exit(exit_code)

    def fail_to_read(self, error: StateFileError) -> NoReturn:
        self.fail(error.code, error.text, str(error))


def _state_path(config: Path, state_file: Path | None, output: Output) -> Path:
    """Return the state file to read: `--state-file`, or the one the config names."""
    if state_file is not None:
        return state_file
    if output.json:
        try:
            return load_config(config).database_path
        except ConfigError as error:
            text = _("Invalid configuration in {source}:", source=error.source)
            output.fail("config_invalid", text, str(error), EXIT_USAGE)
    try:
        return load_or_exit(config).database_path
    except typer.Exit:
        hint = _("To read a state file without the config, pass --state-file PATH.")
        output.err.print(Text(hint, style="dim"))
        raise


def _start(
    config: Path, state_file: Path | None, json_output: bool, lang: Language | None
) -> tuple[Output, Path]:
    """Activate the language and return the command's output and the state file to read."""
    activate(resolve_language(lang, config))
    output = Output.create(json_output)
    return output, _state_path(config, state_file, output)


@store_app.command(
    "summary",
    cls=TranslatedCommand,
    help=N_("Show the outbox, commands in progress, newest orders and disabled slots."),
)
def summary(
    *,
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    state_file: StateFileOption = None,
    json_output: JsonOption = False,
    lang: LangOption = None,
) -> None:
    output, path = _start(config, state_file, json_output, lang)
    try:
        state = read_summary(path)
    except StateFileError as error:
        output.fail_to_read(error)
    now = time.time()  # wall clock, because the stored times are wall-clock timestamps
    if output.json:
        output.print_json(summary_json(state, now))
    else:
        output.out.print(render_summary(state, now))


@store_app.command(
    "orders", cls=TranslatedCommand, help=N_("List the stored orders, newest first.")
)
def orders(
    *,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help=N_("Number of orders shown."))
    ] = 20,
    bank: Annotated[
        str | None, typer.Option("--bank", help=N_("Only the orders of this bank id."))
    ] = None,
    slot: Annotated[
        int | None, typer.Option("--slot", min=1, max=255, help=N_("Only the orders of this slot."))
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    state_file: StateFileOption = None,
    json_output: JsonOption = False,
    lang: LangOption = None,
) -> None:
    output, path = _start(config, state_file, json_output, lang)
    try:
        with open_state_file(path) as db:
            found = read_orders(db, path, limit, bank_id=bank, slot=slot)
    except StateFileError as error:
        output.fail_to_read(error)
    if output.json:
        output.print_json([asdict(order) for order in found])
    else:
        output.out.print(orders_table(_("Orders"), found))
