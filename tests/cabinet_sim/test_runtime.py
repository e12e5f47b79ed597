"""The live runner: control socket, duration, view rendering and the typer command."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from cabinet_sim import SimConfig
from cabinet_sim.cli import sim
from cabinet_sim.runtime import RunOptions, Simulation
from cabinet_sim.view import CabinetView
from tests.cabinet_sim.conftest import empty_config


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> str:
    writer.write(line.encode() + b"\n")
    reply = await asyncio.wait_for(reader.readuntil(b"\n\n"), 2.0)
    return reply.decode().strip()


async def test_control_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "control.sock"
    options = RunOptions(
        config=empty_config(),
        pty=False,
        tcp_port=0,
        view=False,
        stdin=False,
        control_socket=socket_path,
    )
    simulation = Simulation(options, Console(file=io.StringIO()))
    opened: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    runner = asyncio.create_task(simulation.run(opened.set_result))
    endpoints = await asyncio.wait_for(opened, 2.0)
    assert endpoints[0].startswith("socket://127.0.0.1:")
    await asyncio.wait_for(simulation.control_ready.wait(), 2.0)
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    assert await _ask(reader, writer, "insert 2 charge=50") == (
        "inserted bank " + _bank_hex(simulation, 2) + " into slot 2"
    )
    assert (await _ask(reader, writer, "fault 2 fire")).startswith("error: unknown fault")
    assert await _ask(reader, writer, "quit") == "stopping"
    writer.close()
    await asyncio.wait_for(runner, 2.0)
    assert not socket_path.exists()


def _bank_hex(simulation: Simulation, slot: int) -> str:
    bank = simulation.cabinet.slot(slot).bank
    assert bank is not None
    return bank.bank_id.hex().upper()


async def test_runs_for_its_duration() -> None:
    options = RunOptions(
        config=SimConfig(),
        pty=True,
        view=False,
        stdin=False,
        speed=1000.0,
        duration_s=20.0,
    )
    simulation = Simulation(options, Console(file=io.StringIO()))
    await asyncio.wait_for(simulation.run(), 5.0)
    assert simulation.cabinet.now >= 20.0


def test_view_renders_every_slot() -> None:
    options = RunOptions(config=SimConfig(seed=4), pty=False, view=False, stdin=False)
    simulation = Simulation(options)
    cabinet = simulation.cabinet
    view = CabinetView(cabinet, title="demo")
    cabinet.set_board_silent(2)
    cabinet.tamper(1)
    cabinet.insert_bank(1, seated=False, backwards=True, readable=False)
    cabinet.update()
    console = Console(file=io.StringIO(), width=160)
    console.print(view.render())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "demo" in text
    assert "board 2: silent" in text
    assert "loose backwards unreadable" in text
    assert "TAMPER" in text
    assert "SLOT_OPENED" in text
    assert text.count("\n") > 24


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(sim)
    return app


def test_cli_runs_headless() -> None:
    arguments = ["--no-pty", "--tcp", "0", "--no-view", "--no-stdin", "--speed", "1000"]
    result = CliRunner().invoke(_app(), [*arguments, "--duration", "5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "serial port: socket://127.0.0.1:" in result.output


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(_app(), ["--no-pty", "--no-view"])
    assert nothing.exit_code == 2
    assert "nothing to serve on" in nothing.output
    too_big = runner.invoke(_app(), ["--boards", "5", "--slots", "12", "--no-view"])
    assert too_big.exit_code == 2
    assert "48" in too_big.output
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ")
    bad_scenario = runner.invoke(_app(), ["--scenario", str(broken), "--no-view"])
    assert bad_scenario.exit_code == 2
    assert "cannot read scenario" in bad_scenario.output


def _record_runs(monkeypatch: pytest.MonkeyPatch) -> list[RunOptions]:
    """Replace the CLI's Simulation by one that records its options and returns at once."""
    recorded: list[RunOptions] = []

    class RecordedSimulation:
        def __init__(self, options: RunOptions, console: Console) -> None:
            recorded.append(options)

        async def run(self, ready: object = None) -> None:
            return None

    monkeypatch.setattr("cabinet_sim.cli.Simulation", RecordedSimulation)
    return recorded


@pytest.mark.parametrize(
    ("option", "value", "field", "invalid"),
    [
        ("--slotbus-version", "1", "slotbus_version", "4"),
        ("--turnaround", "0", "turnaround_s", "0.01"),
    ],
)
def test_cli_sets_board_option(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str, field: str, invalid: str
) -> None:
    recorded = _record_runs(monkeypatch)
    result = CliRunner().invoke(_app(), ["--no-view", "--no-stdin", option, value])
    assert result.exit_code == 0, result.output
    assert getattr(recorded[0].config, field) == float(value)
    rejected = CliRunner().invoke(_app(), ["--no-view", option, invalid])
    assert rejected.exit_code == 2
    assert field in rejected.output
