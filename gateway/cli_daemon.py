"""CLI commands that start things: the daemon, the demo, the simulator and the scripted cloud."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli_options import LangOption
from gateway.config import (
    DEFAULT_CONFIG_PATH,
    EXAMPLE_CONFIG_PATH,
    ConfigError,
    GatewayConfig,
    check_resources,
    load_config,
    state_dir_problem,
)
from gateway.i18n import N_, _, activate, resolve_language

EX_CONFIG = 78  # sysexits.h: configuration error

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help=N_("Path of the gateway's TOML configuration file.")),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    from rich.console import Console  # imported late: `run` keeps rich out of the daemon

    Console(stderr=True).print(f"[red]{message}[/]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(path: Path, exit_code: int = 2) -> GatewayConfig:
    """Load the config or exit with every problem listed (key, value, what is expected).

    `run` exits with EX_CONFIG, which stops systemd's restarts. `config check` and the `store`
    commands keep 2, the code their documentation gives for an invalid config.
    """
    try:
        return load_config(path)
    except ConfigError as error:
        lines = "\n  ".join(error.problems)
        heading = _("Invalid configuration in {source}:", source=error.source)
        raise _fail(f"{heading}\n  {lines}", exit_code) from None


def _is_within(path: Path, directory: Path) -> bool:
    """Return whether `path` is `directory`, one of its parents or a file below it."""
    return path.is_relative_to(directory) or directory.is_relative_to(path)


def run(config: ConfigOption = DEFAULT_CONFIG_PATH, lang: LangOption = None) -> None:
    """Run the gateway daemon (as systemd does)."""
    from cloud_link import CloudConfigError
    from gateway.daemon import Daemon, InstanceLockedError
    from gateway.logs import setup_logging

    activate(resolve_language(lang, config))
    settings = load_or_exit(config, EX_CONFIG)
    problems = check_resources(settings, strict=False)
    if problems:
        heading = _("Invalid configuration in {source}:", source=str(config))
        raise _fail(heading + "\n  " + "\n  ".join(problems), EX_CONFIG)
    recent = setup_logging(settings.log.level)
    if not settings.mqtt.commands.trusted_keys:
        logging.getLogger(__name__).warning(
            "mqtt.commands.trusted_keys is empty: every cloud command will be rejected"
        )
    try:
        daemon = Daemon(settings, recent_logs=recent)
        # Modules, models and configuration live as long as the process. Frozen, they are
        # left out of full garbage collections, which took 27 ms with them on the
        # development VM (53,000 objects after import) and stalled the event loop.
        gc.freeze()
        asyncio.run(daemon.run())
    except InstanceLockedError as exc:
        raise _fail(_("Another gateway is already running: {detail}", detail=str(exc))) from None
    except CloudConfigError as exc:
        # A configuration error does not heal by restarting: systemd stops on this exit code.
        raise _fail(
            _("Cannot connect to the cloud: {detail}", detail=str(exc)), EX_CONFIG
        ) from None
    except OSError as exc:
        # check_resources has looked at the state directory, but it cannot see everything: it
        # may have run as another user, or the directory changed since. A failure on another
        # path keeps its traceback.
        state_dir = settings.cabinet.state_dir
        if exc.filename is None or not _is_within(Path(exc.filename), state_dir):
            raise
        heading = _("Invalid configuration in {source}:", source=str(config))
        raise _fail(f"{heading}\n  {state_dir_problem(state_dir, exc)}", EX_CONFIG) from None
    except KeyboardInterrupt:
        pass


def config_check(config: ConfigOption = DEFAULT_CONFIG_PATH, lang: LangOption = None) -> None:
    """Validate the configuration file without starting anything."""
    activate(resolve_language(lang, config))
    settings = load_or_exit(config)
    problems = check_resources(settings)
    if problems:
        heading = _("Invalid configuration in {source}:", source=str(config))
        raise _fail(heading + "\n  " + "\n  ".join(problems))
    from rich.console import Console

    Console().print(
        _(
            "Configuration {path} is valid: cabinet {cabinet}, {slots} slots on {boards} boards, "
            "broker {host}:{port}.",
            path=str(config),
            cabinet=settings.cabinet.id,
            slots=settings.serial.slot_count,
            boards=len(settings.serial.boards),
            host=settings.mqtt.host,
            port=settings.mqtt.port,
        ),
        highlight=False,
    )


def config_example() -> None:
    """Print the commented example configuration."""
    sys.stdout.write(EXAMPLE_CONFIG_PATH.read_text(encoding="utf-8"))


def demo(  # noqa: PLR0917 (typer maps each parameter to an option)
    broker: Annotated[
        str | None,
        typer.Option(help=N_("Use this broker (mqtt://HOST:PORT) instead of the embedded one.")),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help=N_("Stop after this many seconds; default: until Ctrl-C."))
    ] = None,
    rent_interval: Annotated[
        float, typer.Option(help=N_("Seconds between two rents by the scripted cloud."))
    ] = 8.0,
    seed: Annotated[int, typer.Option(help=N_("Seed of the simulated cabinet."))] = 1,
    view: Annotated[bool, typer.Option(help=N_("Show the live view."))] = True,
    lang: LangOption = None,
) -> None:
    """Run a simulated cabinet, a broker, the gateway and a scripted cloud, and show them live."""
    from rich.console import Console

    from gateway.cloudtool import BrokerUrlError
    from gateway.demo import DemoOptions, run_demo

    activate(resolve_language(lang))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    options = DemoOptions(
        broker_url=broker,
        duration_s=duration,
        rent_interval_s=rent_interval,
        seed=seed,
        view=view,
    )
    try:
        stats = asyncio.run(run_demo(options, console))
    except KeyboardInterrupt:
        return
    except BrokerUrlError as exc:
        raise _fail(str(exc)) from None
    console.print(
        _(
            "Demo finished: {sent} rents sent, results {results}, {returns} returns reported.",
            sent=stats.commands_sent,
            results=json.dumps(dict(stats.results)),
            returns=stats.events["bank_returned"],
        ),
        highlight=False,
    )


def sim(ctx: typer.Context) -> None:
    """Run the cabinet simulator with the options of `python -m cabinet_sim`.

    The simulator is imported only here, so that `run` does not load it into the daemon.
    """
    from cabinet_sim.cli import sim as run_simulator

    simulator_app = typer.Typer(add_completion=False)
    simulator_app.command()(run_simulator)
    simulator_app(args=ctx.args, prog_name=ctx.command_path)


SIM_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
"""Pass every argument of `sim`, `--help` included, to the simulator's own command line."""


def register_run(app: typer.Typer) -> None:
    """Add `run` to `app`; the entry point builds an app with only this command for the daemon."""
    from gateway.cli_help import TranslatedCommand

    app.command("run", cls=TranslatedCommand, help=N_("Run the gateway daemon (as systemd does)."))(
        run
    )


def register(app: typer.Typer) -> None:
    """Add `run`, `config`, `store`, `demo`, `sim`, `cloud` and `frame` to the top-level app."""
    from gateway.cli_cloud import cloud_app
    from gateway.cli_frame import frame_app
    from gateway.cli_help import TranslatedCommand, TranslatedGroup
    from gateway.cli_store import store_app

    def command(name: str, help_text: str) -> Callable[[Callable[..., None]], Any]:
        return app.command(name, cls=TranslatedCommand, help=help_text)

    register_run(app)
    config_app = typer.Typer(cls=TranslatedGroup, no_args_is_help=True)
    config_app.command(
        "check",
        cls=TranslatedCommand,
        help=N_("Validate the configuration file without starting anything."),
    )(config_check)
    config_app.command(
        "example", cls=TranslatedCommand, help=N_("Print the commented example configuration.")
    )(config_example)
    app.add_typer(config_app, name="config", help=N_("Check or print the configuration."))
    app.add_typer(
        store_app, name="store", help=N_("Read the daemon's state file, also while it is stopped.")
    )
    command("demo", N_("Run a simulated cabinet, a broker, the gateway and a scripted cloud."))(
        demo
    )
    app.command(
        "sim",
        cls=TranslatedCommand,
        help=N_("Run the cabinet simulator on a pseudo-terminal or TCP port."),
        context_settings=SIM_CONTEXT,
        add_help_option=False,
    )(sim)
    app.add_typer(cloud_app, name="cloud", help=N_("Sign and send commands; watch a cabinet."))
    app.add_typer(frame_app, name="frame", help=N_("Decode or encode captured slot-bus frames."))
