"""Command line of the simulator. `sim` is a plain function annotated for typer, so that the
gateway's CLI can mount it as a subcommand; `python -m cabinet_sim` runs it alone."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cabinet_sim.config import SimConfig
from cabinet_sim.runtime import RunOptions, Simulation
from cabinet_sim.scenario import Scenario, ScenarioError
from cabinet_sim.users import UserBehaviour


class WireProtocolOption(StrEnum):
    NATIVE = "native"
    GZXJ = "gzxj"
    S1TT = "s1tt"


def sim(
    *,
    protocol: Annotated[
        WireProtocolOption | None,
        typer.Option(
            help="Wire protocol: native slot-bus boards, one GZXJ station, or S1TT boards. "
            "Default native."
        ),
    ] = None,
    boards: Annotated[
        int | None,
        typer.Option(help="Number of slot boards, addresses 1..N (0..N-1 for S1TT). Default 4."),
    ] = None,
    slots: Annotated[int | None, typer.Option(help="Slots per board, 1..12. Default 6.")] = None,
    slotbus_version: Annotated[
        int | None,
        typer.Option(
            help="Slot-bus version of native boards: 3; 2 for boards without GET_SLOT_RANGE "
            "and ACK_AND_READ_EVENTS; 1 for boards without GET_BANKS either (to test a "
            "master's fallbacks). Default 3."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of every random choice. Default 0.")
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(help="TOML scenario file; --boards, --slots and --seed override it."),
    ] = None,
    pty: Annotated[bool, typer.Option("--pty/--no-pty", help="Serve on a pseudo-terminal.")] = True,
    link: Annotated[
        Path | None,
        typer.Option(help="Symlink to the pseudo-terminal that survives port loss."),
    ] = None,
    tcp: Annotated[
        int | None,
        typer.Option(help="Also serve on 127.0.0.1:PORT, for socket://127.0.0.1:PORT."),
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0.01, help="Simulation seconds per real second.")
    ] = 1.0,
    pacing: Annotated[
        bool, typer.Option("--pacing/--no-pacing", help="Send bytes at the baud rate.")
    ] = True,
    turnaround: Annotated[
        float | None,
        typer.Option(
            help="Seconds from a request's last byte to the response, 0 (an ideal board) "
            "to 0.005. Default 0.001."
        ),
    ] = None,
    users: Annotated[
        bool,
        typer.Option("--users/--no-users", help="Random renters and returners (default rates)."),
    ] = False,
    view: Annotated[
        bool, typer.Option("--view/--no-view", help="Show the live slot table.")
    ] = True,
    stdin: Annotated[
        bool, typer.Option("--stdin/--no-stdin", help="Read control commands from stdin.")
    ] = True,
    control: Annotated[
        Path | None, typer.Option(help="Unix socket path for control commands.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many simulation seconds.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG.")] = False,
) -> None:
    """Simulate a cabinet of slot boards on a serial line, for the gateway to talk to."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not pty and tcp is None:
        raise typer.BadParameter("nothing to serve on: give --pty or --tcp PORT")
    loaded = _load_scenario(scenario)
    overrides: dict[str, object] = {
        "protocol": protocol.value if protocol is not None else None,
        "boards": boards,
        "slots_per_board": slots,
        "slotbus_version": slotbus_version,
        "seed": seed,
        "pacing": pacing,
        "turnaround_s": turnaround,
    }
    console = Console()
    options = RunOptions(
        config=_config(loaded, overrides),
        scenario=loaded,
        users=UserBehaviour(returns_per_hour=4.0) if users else None,
        pty=pty,
        link_path=link,
        tcp_port=tcp,
        speed=speed,
        view=view,
        stdin=stdin,
        control_socket=control,
        duration_s=duration,
    )
    simulation = Simulation(options, console)

    def ready(endpoints: list[str]) -> None:
        for endpoint in endpoints:
            console.print(f"serial port: {endpoint}", markup=False, highlight=False)

    try:
        asyncio.run(simulation.run(ready))
    except KeyboardInterrupt:
        console.print("stopped")


def _config(scenario: Scenario | None, overrides: dict[str, object]) -> SimConfig:
    """Return the scenario's config (or the defaults) with the options given on top."""
    try:
        if scenario is not None:
            return scenario.config(**overrides)
        return SimConfig.model_validate({k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _load_scenario(path: Path | None) -> Scenario | None:
    if path is None:
        return None
    try:
        return Scenario.load(path)
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from exc


def main() -> None:
    typer.run(sim)
