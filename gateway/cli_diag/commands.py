"""The diagnostics commands that technicians run against the daemon's control socket."""

from __future__ import annotations

import contextlib
import getpass
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from gateway.api import ApiError, SelfTestResult
from gateway.cli_diag import formats as fmt
from gateway.cli_diag import names, render, render_actions
from gateway.cli_diag.bundle import default_name, write_bundle
from gateway.cli_diag.session import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    Session,
    SocketOption,
    open_session,
    reporting_errors,
)
from gateway.cli_options import LangOption
from gateway.i18n import N_, _
from protocol.cabinet import EjectOutcome

SlotArgument = Annotated[int, typer.Argument(min=1, max=255, help=N_("Slot number, from 1."))]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help=N_("Why, in a few words; stored and audited."))
]


def status(
    *,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.status()
    if session.json:
        session.print_json(reply)
    else:
        session.show(render.status(reply))


def slots(
    *,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.slots()
    if session.json:
        session.print_json(reply)
    else:
        session.show(render.slots(reply))


def bank(
    *,
    slot: SlotArgument,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.bank(slot)
    if session.json:
        session.print_json(reply)
    else:
        session.show(render.bank(reply))


def bus(
    *,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.bus()
    if session.json:
        session.print_json(reply)
    else:
        session.show(render.bus(reply))


def outbox(
    *,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.outbox()
    if session.json:
        session.print_json(reply)
    else:
        session.show(render.outbox(reply))


def events(
    *,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help=N_("Keep printing new events until Ctrl+C.")),
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=0, max=10_000, help=N_("Number of past events shown."))
    ] = 50,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    if follow:
        _follow_events(session, limit)
        return
    with reporting_errors(session):
        records = list(session.client.events(False, limit))
    if session.json:
        session.print_json(records)
    else:
        session.show(render_actions.events(records))


def _follow_events(session: Session, limit: int) -> None:
    if not session.json:
        session.err.print(_("Following events. Press Ctrl+C to stop."), style="dim")
    stream = session.client.events(True, limit)
    with reporting_errors(session), contextlib.closing(stream):
        try:
            for record in stream:
                if session.json:
                    session.print_json_line(record)
                else:
                    session.show(render_actions.event_line(record))
        except KeyboardInterrupt:
            return


def selftest(
    *,
    slot: Annotated[
        int | None,
        typer.Argument(min=1, max=255, help=N_("Slot to test; all slots when left out.")),
    ] = None,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        if slot is not None:
            results = [session.client.selftest(slot)]
            skipped: list[tuple[int, ApiError]] = []
        else:
            numbers = [info.slot for info in session.client.slots().slots]
            results, skipped = _selftest_all(session, numbers)

    if session.json:
        skipped_json = [
            {"slot": number, "code": error.code.value, "message": error.message}
            for number, error in skipped
        ]
        results_json = [result.model_dump(mode="json", by_alias=True) for result in results]
        session.print_json({"results": results_json, "skipped": skipped_json})
    else:
        session.show(render_actions.selftests(results))
        for number, error in skipped:
            text = _(names.API_ERRORS.get(error.code, N_("The daemon reported an error.")))
            session.show(_("Slot {slot} not tested: {error}", slot=number, error=text))
    if skipped or not all(result.passed for result in results):
        raise typer.Exit(EXIT_FAILED)


def _selftest_all(
    session: Session, numbers: list[int]
) -> tuple[list[SelfTestResult], list[tuple[int, ApiError]]]:
    """Test each slot in turn with a progress bar; a slot the daemon cannot test is skipped."""
    results: list[SelfTestResult] = []
    skipped: list[tuple[int, ApiError]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=session.err, disable=session.json) as progress:
        task = progress.add_task(_("Self-test"), total=len(numbers))
        for number in numbers:
            progress.update(task, description=_("Self-test slot {slot}", slot=number))
            try:
                results.append(session.client.selftest(number))
            except ApiError as error:
                skipped.append((number, error))
            progress.advance(task)
    return results, skipped


def slot_disable(
    *,
    slot: SlotArgument,
    reason: ReasonOption = None,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    if not reason:
        session.fail(
            "reason_missing",
            _("Missing --reason: say why the slot is disabled."),
            exit_code=EXIT_USAGE,
        )
    with reporting_errors(session):
        reply = session.client.slot_disable(slot, reason)
    if session.json:
        session.print_json(reply)
    else:
        session.show(_("Slot {slot} disabled. It stays disabled after a restart.", slot=slot))
        session.show(render.slot_info(reply))


def slot_enable(
    *,
    slot: SlotArgument,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.slot_enable(slot)
    if session.json:
        session.print_json(reply)
    else:
        session.show(_("Slot {slot} enabled.", slot=slot))
        session.show(render.slot_info(reply))


def _default_technician() -> str:
    # Under sudo the login name of the person is more useful in the audit trail than "root".
    return os.environ.get("SUDO_USER") or getpass.getuser()


def eject(
    *,
    slot: SlotArgument,
    maintenance: Annotated[
        bool,
        typer.Option("--maintenance", help=N_("Confirm that this is a maintenance eject.")),
    ] = False,
    reason: ReasonOption = None,
    technician: Annotated[
        str | None,
        typer.Option("--technician", help=N_("Technician name for the audit; default: login.")),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help=N_("Do not ask for confirmation."))
    ] = False,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    if not maintenance:
        text = _(
            "The CLI ejects only for maintenance: add --maintenance and --reason. "
            "Rents are started by the cloud."
        )
        session.fail("maintenance_required", text, exit_code=EXIT_USAGE)
    if not reason:
        session.fail(
            "reason_missing",
            _("Missing --reason: say why the bank is ejected."),
            exit_code=EXIT_USAGE,
        )
    question = _(
        "Eject the bank in slot {slot}? The eject is reported to the operator as a security event.",
        slot=slot,
    )
    if not yes and not typer.confirm(question, err=True):
        session.fail("cancelled", _("Cancelled, nothing was ejected."))

    with reporting_errors(session):
        reply = session.client.maintenance_eject(slot, reason, technician or _default_technician())
    if session.json:
        session.print_json(reply)
    else:
        session.show(render_actions.maintenance_eject(reply))
    if reply.outcome not in (EjectOutcome.TAKEN, EjectOutcome.NOT_TAKEN):
        raise typer.Exit(EXIT_FAILED)


def order(
    *,
    order_id: Annotated[str, typer.Argument(help=N_("Order id, as shown in the back office."))],
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.order(order_id)
    if session.json:
        session.print_json(reply)
    else:
        session.show(render_actions.order(reply))


def bundle(
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=N_("Archive file to write; default: a named .tar.gz in the current folder."),
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
    socket: SocketOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
) -> None:
    session = open_session(json_output, socket, lang, config)
    with reporting_errors(session):
        reply = session.client.bundle()
    path = output or Path.cwd()
    if path.is_dir():
        path = path / default_name(reply)
    try:
        members = write_bundle(reply, path)
    except OSError as error:
        text = _("Cannot write the support bundle to {path}.", path=path)
        session.fail("write_failed", text, str(error))
    size = path.stat().st_size
    if session.json:
        session.print_json({"path": str(path), "bytes": size, "files": members})
    else:
        session.show(
            _(
                "Support bundle written to {path} ({size}). Secrets are removed.",
                path=path,
                size=fmt.size(size),
            )
        )
