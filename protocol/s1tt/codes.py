"""Enumerations carried by S1TT frames. Numeric values are wire values."""

from __future__ import annotations

from enum import IntEnum


class Command(IntEnum):
    STATUS = 0x01  # bank data of one slot
    SET_CHARGE = 0x02
    RESET = 0x03  # reset the bank in one slot
    SET_PDO = 0x04  # USB-PD charging profile of one slot
    SLOTS = 0x05  # presence and lock bits of every slot
    UNLOCK = 0x06
    SET_LED = 0x07
    SET_BANK_INFO = 0x08  # serial, manufacture time, cycle count
    SET_BATTERY_INFO = 0x09  # capacity figures of the bank
    BANK_FIRMWARE = 0x0A  # firmware name and version of a bank
    BANK_ENTER_BOOT = 0x10
    BANK_FWU_HELLO = 0x11
    BANK_FWU_BEGIN = 0x12
    BANK_FWU_DATA = 0x13
    BANK_FWU_END = 0x14
    BANK_FWU_ABORT = 0x15
    BANK_FWU_EXIT = 0x16
    FIRMWARE_VERSION = 0x50
    LINK_STATS = 0x51  # per-slot bank link counters
    UNLOCK_STATS = 0x52  # per-slot unlock counters
    FWU_ENTER = 0x60
    FWU_HELLO = 0x61
    FWU_BEGIN = 0x62
    FWU_DATA = 0x63
    FWU_END = 0x64
    FWU_ABORT = 0x65
    FWU_EXIT = 0x66


class Status(IntEnum):
    """Second payload byte of every reply."""

    OK = 0
    TIMEOUT = 1  # the bank in the slot did not answer the board in time
    INVALID_COMMAND = 2
    INVALID_ARGUMENTS = 3
    INTERNAL_ERROR = 4


class BankState(IntEnum):
    """State byte a bank reports in STATUS."""

    IDLE = 1  # charged, charging finished
    PLUGGED_IN = 2  # in contact, not charging
    CHARGING = 3
    DISCHARGING = 4
    CUTOFF = 5  # pack deeply discharged, protection tripped
