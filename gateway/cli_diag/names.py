"""Translated names of the states, faults and codes the daemon reports."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.api import ApiErrorCode
from gateway.i18n import N_, _
from protocol.cabinet import (
    EjectFailReason,
    EjectOutcome,
    EjectRejectReason,
    LinkState,
    SlotState,
)

SLOT_STATES: dict[str, str] = {
    SlotState.EMPTY: N_("empty"),
    SlotState.CHARGING: N_("charging"),
    SlotState.READY: N_("ready"),
    SlotState.EJECTING: N_("ejecting"),
    SlotState.AWAITING_TAKE: N_("awaiting take"),
    SlotState.FAULTED: N_("faulted"),
    SlotState.DISABLED: N_("disabled"),
    SlotState.UNKNOWN: N_("unknown"),
}

LINK_STATES: dict[str, str] = {
    LinkState.ONLINE: N_("online"),
    LinkState.DEGRADED: N_("degraded"),
    LinkState.OFFLINE: N_("offline"),
}

EJECT_OUTCOMES: dict[str, str] = {
    EjectOutcome.TAKEN: N_("taken"),
    EjectOutcome.NOT_TAKEN: N_("not taken (slot locked again)"),
    EjectOutcome.FAILED: N_("failed"),
    EjectOutcome.REJECTED: N_("rejected"),
}

EJECT_REASONS: dict[str, str] = {
    EjectFailReason.LOCK_FAULT: N_("lock fault"),
    EjectFailReason.BOARD_OFFLINE: N_("board offline"),
    EjectFailReason.BOARD_ERROR: N_("board error"),
    EjectFailReason.TIMEOUT: N_("timed out"),
    EjectFailReason.SHUTDOWN: N_("gateway shutting down"),
    EjectFailReason.INTERRUPTED: N_("gateway restarted during the eject"),
    EjectRejectReason.NO_RENTABLE_BANK: N_("no rentable bank"),
    EjectRejectReason.SLOT_DISABLED: N_("slot disabled"),
    EjectRejectReason.SLOT_BUSY: N_("slot busy"),
    EjectRejectReason.SLOT_EMPTY: N_("slot empty"),
    EjectRejectReason.SLOT_NOT_RENTABLE: N_("slot not rentable"),
    EjectRejectReason.UNKNOWN_SLOT: N_("unknown slot"),
    EjectRejectReason.EXPIRED: N_("command expired"),
}

# SlotFault, BankFault and SelfTestCheck names from protocol.slotbus.codes.
FAULTS: dict[str, str] = {
    "LOCK_STUCK": N_("lock stuck"),
    "LOCK_NOT_RETURNED": N_("lock did not return"),
    "SENSOR": N_("sensor fault"),
    "CONTACT": N_("contact fault"),
    "CHARGER": N_("charger fault"),
    "OVERHEAT": N_("overheated"),
    "ID_READ": N_("bank id unreadable"),
    "TAMPER": N_("opened without unlock (tamper)"),
    "SHORT_CIRCUIT": N_("short circuit"),
    "OVER_TEMPERATURE": N_("bank over temperature"),
    "UNDER_VOLTAGE": N_("bank under voltage"),
    "OVER_VOLTAGE": N_("bank over voltage"),
    "CELL_IMBALANCE": N_("bank cell imbalance"),
    "COMMUNICATION": N_("bank communication fault"),
}

SELFTEST_CHECKS: dict[str, str] = {
    "LOCK_ACTUATOR": N_("lock actuator"),
    "LOCK_SENSOR": N_("lock sensor"),
    "PRESENCE_SWITCH": N_("bank presence switch"),
    "CONTACTS": N_("bank contacts"),
    "CHARGER": N_("charger"),
    "TEMPERATURE_SENSOR": N_("temperature sensor"),
}

LANES: dict[str, str] = {
    "urgent": N_("urgent"),
    "transactional": N_("transactional"),
    "telemetry": N_("telemetry"),
}

API_ERRORS: dict[str, str] = {
    ApiErrorCode.INVALID_REQUEST: N_("The daemon rejected the request as invalid."),
    ApiErrorCode.UNKNOWN_METHOD: N_(
        "The daemon does not know this command. Update the gateway software."
    ),
    ApiErrorCode.INVALID_PARAMS: N_("Invalid value in the request."),
    ApiErrorCode.UNKNOWN_SLOT: N_(
        "No such slot in this cabinet. Run `slots` to list its slot numbers."
    ),
    ApiErrorCode.SLOT_EMPTY: N_("The slot is empty."),
    ApiErrorCode.SLOT_BUSY: N_("The slot is busy with an eject or a self-test. Retry shortly."),
    ApiErrorCode.BOARD_OFFLINE: N_("The board of this slot is offline."),
    ApiErrorCode.NOT_FOUND: N_("Not found."),
    ApiErrorCode.UNAVAILABLE: N_("The daemon is starting or stopping. Retry shortly."),
    ApiErrorCode.INTERNAL: N_("Internal error in the daemon. Collect a support bundle."),
}


EVENT_KINDS: dict[str, str] = {
    "slot_state": N_("slot state"),
    "bank_returned": N_("bank returned"),
    "bank_removed": N_("bank removed without eject"),
    "eject_outcome": N_("eject outcome"),
    "fault": N_("fault"),
    "board_link": N_("board link"),
    "battery_health": N_("battery health"),
    "stock": N_("stock"),
    "selftest": N_("self-test"),
}

ORDER_STEPS: dict[str, str] = {
    "received": N_("command received"),
    "resumed_after_restart": N_("resumed after a gateway restart"),
    "returned": N_("bank returned"),
    "taken": N_("taken"),
    "not_taken": N_("not taken (slot locked again)"),
    "failed": N_("failed"),
    "rejected": N_("rejected"),
}


def event_summary(kind: str, data: Mapping[str, object], english: str) -> str:
    """Return a translated one-line summary of a daemon event, built from its data.

    Falls back to the daemon's English summary for a kind or data this CLI does not know.
    """
    text = {key: "" if value is None else str(value) for key, value in data.items()}
    if kind == "slot_state" and "state" in text:
        return _(
            "{previous} -> {state}",
            previous=slot_state(text.get("previous", "")),
            state=slot_state(text["state"]),
        )
    if kind == "bank_returned" and "identified" in text:
        return _("bank {bank} returned", bank=text.get("bank_id") or _("unidentified"))
    if kind == "eject_outcome" and "eject_outcome" in text:
        reason = text.get("eject_fail_reason") or text.get("eject_reject_reason")
        outcome = translate_name(EJECT_OUTCOMES, text["eject_outcome"])
        return outcome + (f" ({translate_name(EJECT_REASONS, reason)})" if reason else "")
    if kind == "board_link" and "state" in text:
        return _(
            "board {board}: {state}", board=text.get("board", "?"), state=link_state(text["state"])
        )
    if kind == "battery_health" and "health_pct" in text:
        return _(
            "bank {bank}: SoH {health} %, {cycles} cycles",
            bank=text.get("bank_id", ""),
            health=text["health_pct"],
            cycles=text.get("cycles", ""),
        )
    if kind == "stock":
        return _("stock changed")
    return english


def translate_name(table: dict[str, str], value: str | None) -> str:
    """Return the translated name of `value`, or the value itself when the table lacks it."""
    if value is None:
        return "—"
    text = table.get(value)
    return _(text) if text is not None else value


def slot_state(value: str) -> str:
    return translate_name(SLOT_STATES, value)


def event_kind(value: str) -> str:
    return translate_name(EVENT_KINDS, value)


def order_step(value: str) -> str:
    return translate_name(ORDER_STEPS, value)


def link_state(value: str) -> str:
    return translate_name(LINK_STATES, value)


def faults(values: list[str]) -> str:
    return ", ".join(translate_name(FAULTS, value) for value in values) if values else "—"


def selftest_checks(values: list[str]) -> str:
    return ", ".join(translate_name(SELFTEST_CHECKS, value) for value in values)
