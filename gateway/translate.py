"""Turn bridge events into cloud messages. Pure functions: no I/O, no state of their own."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_link import (
    BatteryHealth,
    EjectOutcomeEvent,
    EjectReport,
    FaultEvent,
    OutgoingData,
    ReturnEvent,
    SecurityEvent,
    SecurityEventKind,
    StateChange,
)
from firmware_bridge import (
    BankHealthReport,
    BankRemoved,
    BankReturned,
    BoardLinkChanged,
    CabinetEvent,
    EjectFinished,
    EjectResult,
    FaultRaised,
    LateEjectOutcome,
    SlotStateChanged,
)
from protocol.cabinet import FaultKind, LinkState


@dataclass(frozen=True, slots=True)
class EjectContext:
    """What the daemon knows about the command behind an unlock token."""

    command_id: str | None
    order_id: str | None


def eject_report(result: EjectResult, *, late: bool = False) -> EjectReport:
    return EjectReport(
        outcome=result.outcome,
        slot=result.slot,
        bank_id=result.bank_id,
        fail_reason=result.fail_reason,
        reject_reason=result.reject_reason,
        soc_percent=result.charge,
        temperature_c=result.temperature_c,
        uncertain=result.uncertain,
        late=late,
    )


def return_problem(event: BankReturned) -> str | None:
    problems = []
    if not event.identified:
        problems.append("bank id unreadable")
    if not event.seated:
        problems.append("bank not pushed fully in")
    if event.reconciled:
        problems.append("found by comparing slot status after lost board events")
    return "; ".join(problems) or None


def to_cloud(event: CabinetEvent, context: EjectContext | None) -> list[OutgoingData]:
    """Return the cloud messages for one bridge event (possibly none)."""
    match event:
        case SlotStateChanged():
            return [StateChange(slot=event.slot, state=event.state, previous=event.previous)]
        case BankReturned():
            charge = event.bank.charge if event.bank is not None else None
            return [
                ReturnEvent(
                    slot=event.slot,
                    bank_id=event.bank_id,
                    recognised=event.identified,
                    soc_percent=charge,
                    problem=return_problem(event),
                )
            ]
        case BankRemoved():
            detail = f"bank {event.bank_id or 'unknown'} left slot {event.slot} without an eject"
            return [
                FaultEvent(fault=FaultKind.TAMPER, slot=event.slot, detail=detail),
                SecurityEvent(event=SecurityEventKind.TAMPER, slot=event.slot, detail=detail),
            ]
        case EjectFinished():
            return [_eject_outcome(event.result, context, late=False)]
        case LateEjectOutcome():
            return [_eject_outcome(event.result, context, late=True)]
        case FaultRaised():
            return _fault_messages(event)
        case BoardLinkChanged():
            return _link_messages(event)
        case BankHealthReport():
            return [
                BatteryHealth(
                    slot=event.slot,
                    bank_id=event.bank_id,
                    soh_percent=event.health_pct,
                    cycle_count=event.cycles,
                    retire=event.retire,
                )
            ]
    return []


def _eject_outcome(
    result: EjectResult, context: EjectContext | None, *, late: bool
) -> EjectOutcomeEvent:
    return EjectOutcomeEvent(
        command_id=context.command_id if context else None,
        order_id=context.order_id if context else None,
        report=eject_report(result, late=late),
    )


def _fault_messages(event: FaultRaised) -> list[OutgoingData]:
    slot = event.slot or None
    messages: list[OutgoingData] = [
        FaultEvent(fault=event.kind, slot=slot, board=event.board, detail=event.detail[:200])
    ]
    if event.kind is FaultKind.TAMPER:
        messages.append(
            SecurityEvent(event=SecurityEventKind.TAMPER, slot=slot, detail=event.detail[:200])
        )
    return messages


def _link_messages(event: BoardLinkChanged) -> list[OutgoingData]:
    if event.state is LinkState.OFFLINE:
        return [
            FaultEvent(fault=FaultKind.BOARD_OFFLINE, board=event.board, detail=event.reason[:200])
        ]
    if event.previous is LinkState.OFFLINE:
        return [
            FaultEvent(
                fault=FaultKind.BOARD_OFFLINE,
                board=event.board,
                cleared=True,
                detail=f"board back {event.state.value}"[:200],
            )
        ]
    return []


def summary_of(event: CabinetEvent) -> tuple[str, str, int | None]:
    """Return (kind, one English line, slot) for the CLI's event feed."""
    match event:
        case SlotStateChanged():
            return "slot_state", f"{event.previous} -> {event.state} ({event.reason})", event.slot
        case BankReturned():
            bank = event.bank_id or "unidentified bank"
            return "bank_returned", f"{bank} returned", event.slot
        case BankRemoved():
            return "bank_removed", f"{event.bank_id or 'bank'} removed without eject", event.slot
        case EjectFinished() | LateEjectOutcome():
            result = event.result
            reason = result.fail_reason or result.reject_reason
            text = f"eject {result.outcome}" + (f" ({reason})" if reason else "")
            if isinstance(event, LateEjectOutcome):
                text = "late " + text
            return "eject_outcome", text, result.slot
        case FaultRaised():
            return "fault", f"{event.kind}: {event.detail}", event.slot or None
        case BoardLinkChanged():
            return "board_link", f"board {event.board} {event.state}: {event.reason}", None
        case BankHealthReport():
            text = f"{event.bank_id} SoH {event.health_pct}% cycles {event.cycles}"
            return "battery_health", text, event.slot
    return "stock", "stock changed", None
