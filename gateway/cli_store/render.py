"""Rich views and JSON of what `cabinet-gateway store` reads from the state file."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.api import OutboxLaneStatus
from gateway.cli_diag import formats as fmt
from gateway.cli_diag import names, render
from gateway.cli_store.state_file import DisabledSlot, StateSummary, StoredCommand, StoredOrder
from gateway.i18n import N_, _

ORDER_KINDS = {"rent": N_("rent"), "return": N_("return")}


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else max(0.0, now - at)


def _order_outcome(order: StoredOrder) -> str:
    if order.kind == "return":
        return _("returned, bank not identified") if order.identified is False else _("returned")
    if order.outcome is None:
        return _("in progress")
    outcome = names.translate_name(names.EJECT_OUTCOMES, order.outcome)
    reason = order.fail_reason or order.reject_reason
    if reason is None:
        return outcome
    return f"{outcome} ({names.translate_name(names.EJECT_REASONS, reason)})"


def orders_table(title: str, orders: list[StoredOrder]) -> RenderableType:
    if not orders:
        return Text(_("No order found."))
    table = Table(title=title, title_justify="left")
    for header in (_("Order id"), _("Kind"), _("Slot"), _("Bank"), _("Outcome"), _("Created at")):
        table.add_column(header)
    for order in orders:
        table.add_row(
            order.order_id,
            names.translate_name(ORDER_KINDS, order.kind),
            fmt.text(order.slot),
            fmt.text(order.bank_id),
            _order_outcome(order),
            fmt.timestamp(order.created_at),
        )
    return table


def _commands_table(commands: list[StoredCommand]) -> RenderableType:
    if not commands:
        return Text(_("No command in progress."))
    table = Table(title=_("Commands in progress"), title_justify="left")
    for header in (_("Command id"), _("Command"), _("Slot"), _("Received at")):
        table.add_column(header)
    for command in commands:
        table.add_row(
            command.command_id,
            fmt.text(command.command),
            fmt.text(command.slot),
            fmt.timestamp(command.received_at),
        )
    return table


def _disabled_table(slots: list[DisabledSlot]) -> RenderableType:
    if not slots:
        return Text(_("No slot is disabled."))
    table = Table(title=_("Disabled slots"), title_justify="left")
    for header in (_("Slot"), _("Reason"), _("Disabled at")):
        table.add_column(header)
    for slot in slots:
        table.add_row(str(slot.slot), slot.reason, fmt.timestamp(slot.disabled_at))
    return table


def render_summary(summary: StateSummary, now: float) -> RenderableType:
    header = render.key_values(
        _("State file {path}", path=summary.path),
        [
            (_("Size"), fmt.size(summary.file_bytes)),
            (_("Last written"), fmt.timestamp(summary.last_written_at)),
            (_("Read at"), fmt.timestamp(now)),
        ],
    )
    lanes = [
        OutboxLaneStatus.model_validate(
            {
                "lane": backlog.lane,
                "depth": backlog.messages,
                "bytes": backlog.bytes,
                "oldest_age_s": _age(backlog.oldest_at, now),
            }
        )
        for backlog in summary.lanes
    ]
    letters = _(
        "Dead letters: {dead}. Telemetry dropped: {dropped}.",
        dead=summary.dead_letters,
        dropped=summary.telemetry_dropped,
    )
    return Group(
        header,
        render.outbox_lanes(lanes),
        letters,
        _commands_table(summary.commands_in_progress),
        orders_table(_("Newest orders"), summary.newest_orders),
        _disabled_table(summary.disabled_slots),
    )


def summary_json(summary: StateSummary, now: float) -> dict[str, Any]:
    document: dict[str, Any] = {"schema": 1, "read_at": now, **asdict(summary)}
    for lane in document["lanes"]:
        lane["oldest_age_s"] = _age(lane["oldest_at"], now)
    return document
