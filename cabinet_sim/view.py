"""A Rich rendering of the cabinet: one row per slot, board states and the latest events."""

from __future__ import annotations

from collections import deque

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cabinet_sim.cabinet import Cabinet
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.slot import Slot
from protocol.slotbus.codes import ChargingState, LockState, SlotFault
from protocol.slotbus.messages import bank_id_hex

CHARGING_STYLES = {
    ChargingState.CHARGING: "green",
    ChargingState.TOPPING: "green",
    ChargingState.FULL: "bold green",
    ChargingState.WAITING: "yellow",
    ChargingState.CUTOFF: "bold red",
    ChargingState.OFF: "dim",
    ChargingState.IDLE: "dim",
}


class CabinetView:
    """Keeps the last `log_size` board events and renders the cabinet on demand."""

    def __init__(self, cabinet: Cabinet, log_size: int = 8, title: str = "") -> None:
        self.cabinet = cabinet
        self.title = title
        self.log: deque[str] = deque(maxlen=log_size)
        self.device = ""
        self._unsubscribe = cabinet.subscribe(self._on_notice)

    def close(self) -> None:
        self._unsubscribe()

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.EVENT:
            if notice.event is None:
                line = f"board {notice.board}: event queue full, event dropped"
            else:
                event = notice.event
                bank = bank_id_hex(event.bank_id) or ""
                token = f" token {event.token}" if event.token else ""
                line = (
                    f"board {notice.board} #{event.event_id} {event.kind.name} "
                    f"slot {event.slot}{token} {bank} value {event.value}"
                )
        elif notice.kind in (NoticeKind.PORT_DOWN, NoticeKind.PORT_UP):
            line = f"serial port {'down' if notice.kind is NoticeKind.PORT_DOWN else 'up'}"
        else:
            return
        self.log.append(f"{self.cabinet.now:9.1f} s  {line}")

    def render(self) -> RenderableType:
        return Group(self._header(), self._slots_table(), Text("\n".join(self.log), style="dim"))

    def _header(self) -> Text:
        cabinet = self.cabinet
        port = "up" if cabinet.port_online else "DOWN"
        header = Text(f"{self.title}  t={cabinet.now:.1f} s  port {self.device} {port}\n")
        for address, board in cabinet.boards.items():
            state = "ok"
            if board.silent:
                state = "silent"
            elif not board.responsive:
                state = "rebooting"
            header.append(
                f"board {address}: {state}, boot {board.boot_count}, "
                f"{board.events.pending} events pending, {board.events.dropped} dropped   ",
                style="red" if state != "ok" else "",
            )
        return header

    def _slots_table(self) -> Table:
        table = Table(expand=False, pad_edge=False)
        for column in ("slot", "board", "bank", "charge", "temp", "charging", "lock", "faults"):
            table.add_column(column)
        for number in range(1, self.cabinet.slot_count + 1):
            where = self.cabinet.locate(number)
            slot = self.cabinet.slot(number)
            table.add_row(
                str(number),
                f"{where.board}/{where.slot}",
                *self._bank_cells(slot),
                Text(slot.charging.name, style=CHARGING_STYLES.get(slot.charging, "")),
                self._lock_cell(slot),
                Text(_fault_names(slot.faults), style="red"),
            )
        return table

    @staticmethod
    def _bank_cells(slot: Slot) -> tuple[str, str, str]:
        bank = slot.bank
        if bank is None:
            return ("-", "", "")
        name = _short_id(bank.bank_id)
        if not slot.seated:
            name += " loose"
        if slot.backwards:
            name += " backwards"
        if not bank.readable:
            name += " unreadable"
        return (name, f"{bank.charge:5.1f} %", f"{bank.temperature_c:4.1f} C")

    def _lock_cell(self, slot: Slot) -> Text:
        if slot.window is not None:
            remaining = slot.window.ends_at - self.cabinet.now
            return Text(f"OPEN {remaining:4.1f} s", style="bold cyan")
        style = "" if slot.lock is LockState.LOCKED else "bold red"
        return Text(slot.lock.name, style=style)


def _fault_names(faults: SlotFault) -> str:
    return " ".join(fault.name or "" for fault in SlotFault if fault in faults)


def _short_id(bank_id: bytes) -> str:
    """Return the id in hex without its zero padding, keeping at least 4 bytes."""
    significant = bank_id.lstrip(b"\x00")
    return bank_id[-max(4, len(significant)) :].hex().upper()
