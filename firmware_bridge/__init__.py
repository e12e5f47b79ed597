"""The firmware bridge: the only code on the RS-485 slot bus; a trusted model of the cabinet."""

from firmware_bridge.bridge import Bridge
from firmware_bridge.clock import Clock, SystemClock
from firmware_bridge.config import BackoffConfig, BoardSpec, BridgeConfig, EchoMode
from firmware_bridge.errors import (
    BoardOfflineError,
    BoardRejectedError,
    BridgeError,
    ChargingRefusedError,
    NotConnectedError,
    PortBusyError,
    PortError,
    PortLostError,
    RequestTimeoutError,
    SinkError,
    UnknownSlotError,
)
from firmware_bridge.events import (
    BankHealthReport,
    BankRemoved,
    BankReturned,
    BoardLinkChanged,
    CabinetEvent,
    EjectFinished,
    EventSink,
    FaultRaised,
    LateEjectOutcome,
    SlotStateChanged,
    StockChanged,
)
from firmware_bridge.factory import SlotDriver, create_bridge
from firmware_bridge.results import BankInfo, BoardEventKey, EjectResult, SelfTestReport
from firmware_bridge.snapshot import (
    BoardIdentity,
    BoardSnapshot,
    CabinetSnapshot,
    SlotSnapshot,
    StockCounts,
)
from firmware_bridge.stats import BoardBusStats, BusStats
from firmware_bridge.store import BridgeStore, EventWatermark, MemoryStore
from firmware_bridge.transport import ByteLink, PortOpener, open_link

__all__ = [
    "BackoffConfig",
    "BankHealthReport",
    "BankInfo",
    "BankRemoved",
    "BankReturned",
    "BoardBusStats",
    "BoardEventKey",
    "BoardIdentity",
    "BoardLinkChanged",
    "BoardOfflineError",
    "BoardRejectedError",
    "BoardSnapshot",
    "BoardSpec",
    "Bridge",
    "BridgeConfig",
    "BridgeError",
    "BridgeStore",
    "BusStats",
    "ByteLink",
    "CabinetEvent",
    "CabinetSnapshot",
    "ChargingRefusedError",
    "Clock",
    "EchoMode",
    "EjectFinished",
    "EjectResult",
    "EventSink",
    "EventWatermark",
    "FaultRaised",
    "LateEjectOutcome",
    "MemoryStore",
    "NotConnectedError",
    "PortBusyError",
    "PortError",
    "PortLostError",
    "PortOpener",
    "RequestTimeoutError",
    "SelfTestReport",
    "SinkError",
    "SlotDriver",
    "SlotSnapshot",
    "SlotStateChanged",
    "StockChanged",
    "StockCounts",
    "SystemClock",
    "UnknownSlotError",
    "create_bridge",
    "open_link",
]
