"""The technicians' diagnostics commands, in Simplified Chinese and English.

`register(app)` adds them to the gateway's top-level Typer app. Each command talks to the
running daemon through the control socket and has `--json`, `--socket`, `--lang` and `--config`.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from gateway.cli_diag import commands
from gateway.cli_help import TranslatedCommand, TranslatedGroup
from gateway.i18n import N_

# TranslatedCommand and TranslatedGroup are for other commands whose help is marked with N_().
__all__ = ["TranslatedCommand", "TranslatedGroup", "register"]


def register(app: typer.Typer) -> None:
    """Add the diagnostics commands and the `slot` group to `app`."""
    entries: list[tuple[str, Callable[..., None], str]] = [
        ("status", commands.status, N_("Show links, boards, outbox, stock and last errors.")),
        ("slots", commands.slots, N_("Show every slot with its bank, SoC, SoH and state.")),
        ("bank", commands.bank, N_("Show the bank in a slot and its SoH history.")),
        ("bus", commands.bus, N_("Show RS-485 serial statistics, per board too.")),
        ("outbox", commands.outbox, N_("Show messages waiting for the cloud and dead letters.")),
        ("events", commands.events, N_("Show recent events, or follow new ones.")),
        ("selftest", commands.selftest, N_("Run the self-test of one slot or of all slots.")),
        ("eject", commands.eject, N_("Eject a bank for maintenance (audited).")),
        ("order", commands.order, N_("Show the evidence of one rent or return.")),
        ("bundle", commands.bundle, N_("Write a support archive without secrets.")),
    ]
    for name, function, help_text in entries:
        app.command(name, cls=TranslatedCommand, help=help_text)(function)

    slot_app = typer.Typer(cls=TranslatedGroup, no_args_is_help=True)
    slot_app.command(
        "disable", cls=TranslatedCommand, help=N_("Disable a slot so it is never rented.")
    )(commands.slot_disable)
    slot_app.command("enable", cls=TranslatedCommand, help=N_("Enable a disabled slot again."))(
        commands.slot_enable
    )
    app.add_typer(slot_app, name="slot", help=N_("Disable or enable a slot."))
