"""Enumerations carried on the slot bus. Numeric values are wire values and never change."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Command(IntEnum):
    IDENTIFY = 0x01
    GET_SLOTS = 0x02
    GET_BANK = 0x03
    GET_BANKS = 0x04  # protocol version 2, with Capability.BANK_BATCH
    GET_SLOT_RANGE = 0x05  # protocol version 3, with Capability.SLOT_RANGE
    UNLOCK = 0x10
    LOCK = 0x11
    SET_CHARGING = 0x12
    SELF_TEST = 0x13
    RESET = 0x14
    QUERY_UNLOCK = 0x15
    READ_EVENTS = 0x20
    ACK_EVENTS = 0x21
    ACK_AND_READ_EVENTS = 0x22  # protocol version 3, with Capability.ACK_ON_READ


class Status(IntEnum):
    """First payload byte of every response."""

    OK = 0
    BUSY = 1
    UNKNOWN_COMMAND = 2
    INVALID_ARGUMENT = 3
    SLOT_FAULT = 4
    INTERNAL_ERROR = 5
    NO_BANK = 6


class Capability(IntFlag):
    BANK_DATA = 0x0001
    CHARGE_CONTROL = 0x0002
    SELF_TEST = 0x0004
    LOCK_SENSOR = 0x0008
    TEMPERATURE = 0x0010
    EVENT_QUEUE = 0x0020
    UNLOCK_TOKENS = 0x0040
    BANK_BATCH = 0x0080  # implements GET_BANKS (protocol version 2)
    SLOT_RANGE = 0x0100  # implements GET_SLOT_RANGE (protocol version 3)
    ACK_ON_READ = 0x0200  # implements ACK_AND_READ_EVENTS (protocol version 3)


class SlotFlag(IntFlag):
    BANK_PRESENT = 0x01  # presence micro-switch closed
    BANK_SEATED = 0x02  # bank pushed fully in, contacts made
    ID_VALID = 0x04  # bank_id contains an id read from the bank
    TAKE_WINDOW = 0x08  # an unlock's take window is running


class LockState(IntEnum):
    LOCKED = 0
    UNLOCKED = 1  # solenoid released, latch not yet seen open
    OPEN = 2  # position sensor sees the latch open
    FAULT = 3  # sensor and actuator disagree


class ChargingState(IntEnum):
    IDLE = 0  # no bank or not charging for no particular reason
    CHARGING = 1  # constant-current phase
    TOPPING = 2  # constant-voltage phase
    FULL = 3
    OFF = 4  # switched off by the master
    CUTOFF = 5  # stopped by the board: overheat or fault
    WAITING = 6  # the board's limit of banks charging at once is reached


class SlotFault(IntFlag):
    LOCK_STUCK = 0x0001  # lock did not open when released
    LOCK_NOT_RETURNED = 0x0002  # solenoid did not return, slot cannot lock
    SENSOR = 0x0004
    CONTACT = 0x0008
    CHARGER = 0x0010
    OVERHEAT = 0x0020
    ID_READ = 0x0040
    TAMPER = 0x0080  # latch opened without an unlock
    SHORT_CIRCUIT = 0x0100


class BankFault(IntFlag):
    OVER_TEMPERATURE = 0x0001
    UNDER_VOLTAGE = 0x0002
    OVER_VOLTAGE = 0x0004
    CELL_IMBALANCE = 0x0008
    COMMUNICATION = 0x0010
    SHORT_CIRCUIT = 0x0020


class UnlockCode(IntEnum):
    OPENED = 0
    LOCK_FAULT = 1


class SelfTestCheck(IntFlag):
    LOCK_ACTUATOR = 0x01
    LOCK_SENSOR = 0x02
    PRESENCE_SWITCH = 0x04
    CONTACTS = 0x08
    CHARGER = 0x10
    TEMPERATURE_SENSOR = 0x20


class EventKind(IntEnum):
    BOARD_BOOT = 1  # value: BootReason
    BANK_INSERTED = 2  # value: InsertFlag bits
    BANK_REMOVED = 3  # removed outside any take window
    UNLOCK_TAKEN = 4  # token set; bank_id of the bank taken
    UNLOCK_NOT_TAKEN = 5  # token set; slot locked again with the bank inside
    UNLOCK_LOCK_FAULT = 6  # token set; value: SlotFault bits
    SLOT_OPENED = 7  # latch opened without an unlock (tamper)
    OVERHEAT = 8  # value: temperature in 0.1 degC
    ID_READ_FAILED = 9  # bank present, id unreadable
    LOCK_NOT_RETURNED = 10  # solenoid did not return after a take window


class TokenState(IntEnum):
    """State of an unlock token as the board records it (QUERY_UNLOCK)."""

    UNKNOWN = 0  # never seen since boot, or pushed out of the token cache
    WINDOW_OPEN = 1  # lock opened, take window running
    TAKEN = 2
    NOT_TAKEN = 3
    LOCK_FAULT = 4


class BootReason(IntEnum):
    POWER_ON = 0
    COMMANDED = 1
    WATCHDOG = 2
    BROWN_OUT = 3


class InsertFlag(IntFlag):
    ID_VALID = 0x01
    SEATED = 0x02
