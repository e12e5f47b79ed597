"""Rich views of the cabinet state replies: status, slots, bank, bus and outbox."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.api import (
    BankReply,
    BusReply,
    OutboxLaneStatus,
    OutboxReply,
    SlotInfo,
    SlotsReply,
    StatusReply,
)
from gateway.cli_diag import formats as fmt
from gateway.cli_diag import names
from gateway.i18n import _

_LINK_STYLES = {"online": "green", "degraded": "yellow", "offline": "bold red"}
_SLOT_STYLES = {
    "ready": "green",
    "charging": "cyan",
    "faulted": "bold red",
    "disabled": "magenta",
    "unknown": "yellow",
}


def link(value: str) -> Text:
    return Text(names.link_state(value), style=_LINK_STYLES.get(value, ""))


def slot_state(value: str) -> Text:
    return Text(names.slot_state(value), style=_SLOT_STYLES.get(value, ""))


def key_values(title: str, rows: list[tuple[str, str | Text]]) -> Group:
    # The title is a line of its own because a table title wraps at the table's width.
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return Group(Text(title, style="italic"), table)


def status(reply: StatusReply) -> RenderableType:
    stock = reply.stock
    summary = key_values(
        _("Cabinet {cabinet}", cabinet=reply.cabinet_id),
        [
            (_("Gateway version"), reply.version),
            (_("Uptime"), fmt.duration(reply.uptime_s)),
            (_("MQTT link"), link(reply.mqtt.state)),
            (_("Broker"), reply.mqtt.broker),
            (_("Last MQTT error"), fmt.text(reply.mqtt.last_error)),
            (_("RS-485 serial link"), link(reply.serial.state)),
            (_("Serial port"), f"{reply.serial.port} ({_port_state(reply.serial.port_open)})"),
            (_("Last serial error"), fmt.text(reply.serial.last_error)),
            (
                _("Stock"),
                _(
                    "{rentable} rentable, {charging} charging, {empty} empty, "
                    "{faulted} faulted, {disabled} disabled",
                    rentable=stock.rentable,
                    charging=stock.charging,
                    empty=stock.empty,
                    faulted=stock.faulted,
                    disabled=stock.disabled,
                ),
            ),
        ],
    )
    boards = Table(title=_("Boards"), title_justify="left")
    for header in (_("Address"), _("Board id"), _("Firmware"), _("Slots"), _("Link"), _("Reason")):
        boards.add_column(header)
    for board in reply.boards:
        last_slot = board.first_slot + board.slot_count - 1
        boards.add_row(
            str(board.address),
            fmt.text(board.board_id),
            fmt.text(board.firmware),
            f"{board.first_slot}-{last_slot}",
            link(board.link),
            fmt.text(board.reason),
        )
    parts: list[RenderableType] = [summary, boards, outbox_lanes(reply.outbox.lanes)]
    parts.append(
        _(
            "Dead letters: {dead}. Telemetry dropped: {dropped}.",
            dead=reply.outbox.dead_letters,
            dropped=reply.outbox.dropped_telemetry,
        )
    )
    if reply.last_errors:
        errors = Table(title=_("Last errors"), title_justify="left")
        for header in (_("Time"), _("Source"), _("Error")):
            errors.add_column(header)
        for error in reply.last_errors:
            errors.add_row(fmt.timestamp(error.at), error.source, error.message)
        parts.append(errors)
    return Group(*parts)


def _port_state(port_open: bool) -> str:
    return _("open") if port_open else _("closed")


def outbox_lanes(lanes: list[OutboxLaneStatus]) -> Table:
    table = Table(title=_("Outbox"), title_justify="left")
    for header in (_("Lane"), _("Messages"), _("Size"), _("Oldest")):
        table.add_column(header)
    for lane in lanes:
        table.add_row(
            names.translate_name(names.LANES, lane.lane),
            str(lane.depth),
            fmt.size(lane.bytes),
            fmt.duration(lane.oldest_age_s),
        )
    return table


def _slot_note(slot: SlotInfo) -> str:
    notes = []
    if slot.disabled_reason:
        notes.append(_("disabled: {reason}", reason=slot.disabled_reason))
    if slot.retire:
        notes.append(_("retire this bank"))
    if slot.rentable:
        notes.append(_("rentable"))
    return "; ".join(notes) or fmt.MISSING


def slots(reply: SlotsReply) -> Table:
    table = Table(title=_("Slots"), title_justify="left")
    headers = (
        _("Slot"),
        _("Board"),
        _("State"),
        _("Bank"),
        "SoC",
        _("Temp."),
        _("Voltage"),
        "SoH",
        _("Cycles"),
        _("Faults"),
        _("Notes"),
    )
    for header in headers:
        table.add_column(header)
    for slot in reply.slots:
        table.add_row(
            str(slot.slot),
            str(slot.board),
            slot_state(slot.state),
            fmt.text(slot.bank_id),
            fmt.percent(slot.charge_pct),
            fmt.celsius(slot.temperature_c),
            fmt.volts(slot.voltage_mv),
            fmt.percent(slot.health_pct),
            fmt.text(slot.cycles),
            names.faults(slot.faults),
            _slot_note(slot),
        )
    return table


def slot_info(slot: SlotInfo) -> Group:
    return key_values(
        _("Slot {slot}", slot=slot.slot),
        [
            (_("State"), slot_state(slot.state)),
            (_("Bank"), fmt.text(slot.bank_id)),
            (_("Disabled reason"), fmt.text(slot.disabled_reason)),
        ],
    )


def bank(reply: BankReply) -> RenderableType:
    details = key_values(
        _("Bank in slot {slot}", slot=reply.slot),
        [
            (_("State"), slot_state(reply.state)),
            (_("Bank"), fmt.text(reply.bank_id)),
            ("SoC", fmt.percent(reply.charge_pct)),
            (_("Voltage"), fmt.volts(reply.voltage_mv)),
            (_("Current"), fmt.milliamps(reply.current_ma)),
            (_("Temperature"), fmt.celsius(reply.temperature_c)),
            ("SoH", fmt.percent(reply.health_pct)),
            (_("Cycles"), fmt.text(reply.cycles)),
            (_("Capacity"), fmt.milliamp_hours(reply.capacity_mah)),
            (_("Faults"), names.faults(reply.faults)),
            (_("Retire"), fmt.yes_no(reply.retire)),
            (_("Read at"), fmt.timestamp(reply.read_at)),
        ],
    )
    history = Table(title=_("SoH history"), title_justify="left")
    for header in (_("Time"), "SoH", _("Cycles")):
        history.add_column(header)
    for sample in reply.health_history:
        history.add_row(
            fmt.timestamp(sample.at), fmt.percent(sample.health_pct), fmt.text(sample.cycles)
        )
    return Group(details, history)


def bus(reply: BusReply) -> RenderableType:
    port = f"{reply.port} ({_port_state(reply.port_open)})"
    latency = f"{fmt.milliseconds(reply.latency_p50_s)} / {fmt.milliseconds(reply.latency_p99_s)}"
    totals = key_values(
        _("RS-485 bus"),
        [
            (_("Serial port"), port),
            (_("Frames sent / received"), f"{reply.frames_sent} / {reply.frames_received}"),
            (_("Bytes sent / received"), f"{reply.bytes_sent} / {reply.bytes_received}"),
            (_("Bytes dropped"), str(reply.bytes_dropped)),
            (_("CRC errors"), str(reply.crc_errors)),
            (_("Timeouts"), str(reply.timeouts)),
            (_("Retries"), str(reply.retries)),
            (_("Echoes"), str(reply.echoes)),
            (_("Reply latency p50 / p99"), latency),
            (_("Port reopened"), str(reply.reopens)),
        ],
    )
    boards = Table(title=_("Per board"), title_justify="left")
    headers = (
        _("Address"),
        _("Requests"),
        _("Replies"),
        _("Timeouts"),
        _("Retries"),
        _("Errors"),
        "p50",
        "p99",
    )
    for header in headers:
        boards.add_column(header)
    for board in reply.boards:
        boards.add_row(
            str(board.address),
            str(board.requests),
            str(board.replies),
            str(board.timeouts),
            str(board.retries),
            str(board.errors),
            fmt.milliseconds(board.latency_p50_s),
            fmt.milliseconds(board.latency_p99_s),
        )
    return Group(totals, boards)


def outbox(reply: OutboxReply) -> RenderableType:
    summary = _(
        "Dead letters: {dead}. Telemetry dropped: {dropped}.",
        dead=reply.dead_letter_count,
        dropped=reply.dropped_telemetry,
    )
    letters = Table(title=_("Dead letters"), title_justify="left")
    for header in (_("Failed at"), _("Seq."), _("Topic"), _("Size"), _("Reason")):
        letters.add_column(header)
    for letter in reply.dead_letters:
        reason = letter.reason
        if letter.reason_code is not None:
            reason = f"{reason} ({letter.reason_code})"
        letters.add_row(
            fmt.timestamp(letter.failed_at),
            str(letter.seq),
            letter.topic,
            fmt.size(letter.size),
            reason,
        )
    return Group(outbox_lanes(reply.lanes), summary, letters)
