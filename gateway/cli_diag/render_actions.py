"""Rich views of events, self-tests, maintenance ejects and order evidence."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.api import (
    BankReading,
    EventRecord,
    MaintenanceEjectReply,
    OrderEvidence,
    SelfTestResult,
)
from gateway.cli_diag import formats as fmt
from gateway.cli_diag import names
from gateway.cli_diag.render import key_values
from gateway.i18n import _


def events(records: list[EventRecord]) -> Table:
    table = Table(title=_("Events"), title_justify="left")
    for header in (_("Time"), _("Kind"), _("Slot"), _("Summary")):
        table.add_column(header)
    for record in records:
        table.add_row(
            fmt.timestamp(record.at),
            names.event_kind(record.kind),
            fmt.text(record.slot),
            names.event_summary(record.kind, record.data, record.summary),
        )
    return table


def event_line(record: EventRecord) -> Text:
    slot = _("slot {slot}", slot=record.slot) if record.slot is not None else ""
    line = Text(f"{fmt.timestamp(record.at)}  ")
    line.append(names.event_kind(record.kind), style="bold")
    if slot:
        line.append(f"  {slot}")
    line.append(f"  {names.event_summary(record.kind, record.data, record.summary)}")
    return line


def _passed(passed: bool) -> Text:
    return Text(_("passed"), style="green") if passed else Text(_("failed"), style="bold red")


def selftests(results: list[SelfTestResult]) -> Table:
    table = Table(title=_("Self-test"), title_justify="left")
    for header in (_("Slot"), _("Result"), _("Failed checks"), _("Time")):
        table.add_column(header)
    for result in results:
        table.add_row(
            str(result.slot),
            _passed(result.passed),
            names.selftest_checks(result.failed_checks) or fmt.MISSING,
            fmt.timestamp(result.at),
        )
    return table


def _reason(fail_reason: str | None, reject_reason: str | None) -> str:
    reason = fail_reason or reject_reason
    return names.translate_name(names.EJECT_REASONS, reason) if reason else fmt.MISSING


def maintenance_eject(reply: MaintenanceEjectReply) -> Group:
    outcome = names.translate_name(names.EJECT_OUTCOMES, reply.outcome)
    return key_values(
        _("Maintenance eject, slot {slot}", slot=reply.slot),
        [
            (_("Outcome"), outcome),
            (_("Reason"), _reason(reply.fail_reason, reply.reject_reason)),
            (_("Bank"), fmt.text(reply.bank_id)),
            (_("Audit event sequence"), fmt.text(reply.audit_seq)),
            (_("Detail"), fmt.text(reply.detail)),
        ],
    )


def _reading_rows(reading: BankReading | None) -> list[str]:
    if reading is None:
        return [fmt.MISSING] * 6
    return [
        fmt.timestamp(reading.at),
        fmt.text(reading.bank_id),
        fmt.percent(reading.charge_pct),
        fmt.celsius(reading.temperature_c),
        fmt.volts(reading.voltage_mv),
        fmt.percent(reading.health_pct),
    ]


def order(reply: OrderEvidence) -> RenderableType:
    kind = _("rent") if reply.kind == "rent" else _("return")
    rows: list[tuple[str, str | Text]] = [
        (_("Kind"), kind),
        (_("Slot"), fmt.text(reply.slot)),
        (_("Bank"), fmt.text(reply.bank_id)),
    ]
    if reply.kind == "rent":
        outcome = names.translate_name(names.EJECT_OUTCOMES, reply.outcome)
        rows.append((_("Outcome"), outcome if reply.outcome else _("in progress")))
        rows.append((_("Reason"), _reason(reply.fail_reason, reply.reject_reason)))
    else:
        identified = fmt.MISSING if reply.identified is None else fmt.yes_no(reply.identified)
        rows.append((_("Bank identified"), identified))
    summary = key_values(_("Order {order}", order=reply.order_id), rows)

    readings = Table(title=_("Bank data"), title_justify="left")
    headers = ("", _("Time"), _("Bank"), "SoC", _("Temperature"), _("Voltage"), "SoH")
    for header in headers:
        readings.add_column(header)
    readings.add_row(_("at eject"), *_reading_rows(reply.bank_at_eject))
    readings.add_row(_("at return"), *_reading_rows(reply.bank_at_return))

    steps = Table(title=_("Steps"), title_justify="left")
    for header in (_("Time"), _("Step"), _("Detail")):
        steps.add_column(header)
    for step in reply.steps:
        steps.add_row(fmt.timestamp(step.at), names.order_step(step.step), fmt.text(step.detail))
    return Group(summary, readings, steps)
