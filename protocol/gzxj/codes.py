"""Enumerations carried by GZXJ frames. Values are the text on the wire."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Command(StrEnum):
    CQ = "CQ"  # host: query all slots; the station replies with AC
    AC = "AC"  # station: slot report, also unsolicited every 3 minutes
    BW = "BW"  # host: rent, the station chooses the bank
    FB = "FB"  # host: rent from a named slot
    BR = "BR"  # host: confirm that a rent result arrived
    RS = "RS"  # station: return report, which the host must confirm
    FA = "FA"  # host: force unlock one slot or all
    CM = "CM"  # host: set the renting rules


class Side(StrEnum):
    HOST = "host"
    STATION = "station"


class RentResult(IntEnum):
    NO_BANK = 0  # no bank meets the rules, or the named slot is empty
    OK = 1
    TIMEOUT = 100
    LOCK_ABNORMAL = 110
