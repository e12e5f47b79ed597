"""Cabinet-level vocabulary shared by the serial side and the cloud side.

These enums name what a cabinet does, independent of any wire format, so that
`firmware_bridge` (which produces them) and `cloud_link` (which publishes them)
agree without importing each other. String values are part of the MQTT contract:
renaming one is a breaking change for backends.
"""

from __future__ import annotations

from enum import StrEnum


class SlotState(StrEnum):
    """State of one slot in the cabinet model; the cabinet itself is slot 0."""

    EMPTY = "empty"
    CHARGING = "charging"
    READY = "ready"  # bank present, identified and not charging (full or charge limit)
    EJECTING = "ejecting"  # unlock sent, waiting for the board to confirm the lock opened
    AWAITING_TAKE = "awaiting_take"  # lock open, take window running
    FAULTED = "faulted"
    DISABLED = "disabled"
    UNKNOWN = "unknown"  # board offline or not read yet


class EjectOutcome(StrEnum):
    """The one final outcome of an eject request."""

    TAKEN = "taken"
    NOT_TAKEN = "not_taken"
    FAILED = "failed"
    REJECTED = "rejected"


class EjectFailReason(StrEnum):
    LOCK_FAULT = "lock_fault"
    BOARD_OFFLINE = "board_offline"
    BOARD_ERROR = "board_error"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    INTERRUPTED = "interrupted"  # the gateway restarted during the eject and the result is unknown


class EjectRejectReason(StrEnum):
    NO_RENTABLE_BANK = "no_rentable_bank"
    SLOT_DISABLED = "slot_disabled"
    SLOT_BUSY = "slot_busy"
    SLOT_EMPTY = "slot_empty"
    SLOT_NOT_RENTABLE = "slot_not_rentable"
    UNKNOWN_SLOT = "unknown_slot"
    EXPIRED = "expired"


class LinkState(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class FaultKind(StrEnum):
    """Faults reported to the cloud as events."""

    LOCK_FAULT = "lock_fault"
    LOCK_NOT_RETURNED = "lock_not_returned"
    TAMPER = "tamper"  # slot opened without an unlock
    OVERHEAT = "overheat"
    ID_READ_FAILED = "id_read_failed"
    BOARD_OFFLINE = "board_offline"
    BOARD_ONLINE = "board_online"
    BOARD_RESET = "board_reset"
    EVENT_OVERFLOW = "event_overflow"
    SERIAL_PORT_LOST = "serial_port_lost"
