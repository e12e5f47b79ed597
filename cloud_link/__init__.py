"""The cabinet's link to the cloud over MQTT: messages, outbox, session and commands.

How the gateway uses it:

    async def handle(command: AcceptedCommand) -> CommandOutcome:
        # Run the command on the slot bus; never start after command.deadline_monotonic.
        ...

    link = CloudLink(config, database=path, handler=handle, birth_provider=make_birth)
    for pending in link.pending_commands():        # started before a restart, no result yet
        link.complete_command(pending.command_id, "eject", resolve(pending))
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(link.run())
        link.send(FaultEvent(fault=FaultKind.TAMPER, slot=3))   # returns the sequence number
        ...
        link.stop()                                # flush, publish offline, return from run()
    link.close()

`docs/mqtt-api.md` describes the wire contract for backend engineers.
"""

from cloud_link.clock import Clock, ManualClock, SystemClock
from cloud_link.command_store import (
    BeginResult,
    BeginState,
    CommandStore,
    PendingCommand,
    ReplyTo,
    unlock_token_for,
)
from cloud_link.commands import (
    AcceptedCommand,
    CommandBody,
    CommandOutcome,
    EjectCommand,
    LockCommand,
    RebirthCommand,
    SelftestCommand,
    SignedCommand,
    SlotDisableCommand,
    SlotEnableCommand,
)
from cloud_link.config import (
    ClockSync,
    CloudConfig,
    CommandSettings,
    OutboxLimits,
    TlsConfig,
)
from cloud_link.dispatcher import CommandHandler
from cloud_link.errors import (
    CloudConfigError,
    CloudLinkError,
    OutboxFullError,
    SigningError,
    StorageError,
    UnknownCommandError,
)
from cloud_link.messages import (
    BatteryHealth,
    Birth,
    BoardSnapshot,
    CommandRejectReason,
    CommandResult,
    CommandStatus,
    EjectOutcomeEvent,
    EjectReport,
    Envelope,
    FaultEvent,
    Heartbeat,
    LowStockEvent,
    ReturnEvent,
    SecurityEvent,
    SecurityEventKind,
    SlotSnapshot,
    StateChange,
    StockReport,
    parse_message,
)
from cloud_link.outbox import DeadLetter, LaneSummary
from cloud_link.session import DATABASE_NAME, BirthProvider, CloudLink, LinkStats, OutgoingData
from cloud_link.signing import public_key_base64, sign_command
from cloud_link.topics import Topics

__all__ = [
    "DATABASE_NAME",
    "AcceptedCommand",
    "BatteryHealth",
    "BeginResult",
    "BeginState",
    "Birth",
    "BirthProvider",
    "BoardSnapshot",
    "Clock",
    "ClockSync",
    "CloudConfig",
    "CloudConfigError",
    "CloudLink",
    "CloudLinkError",
    "CommandBody",
    "CommandHandler",
    "CommandOutcome",
    "CommandRejectReason",
    "CommandResult",
    "CommandSettings",
    "CommandStatus",
    "CommandStore",
    "DeadLetter",
    "EjectCommand",
    "EjectOutcomeEvent",
    "EjectReport",
    "Envelope",
    "FaultEvent",
    "Heartbeat",
    "LaneSummary",
    "LinkStats",
    "LockCommand",
    "LowStockEvent",
    "ManualClock",
    "OutboxFullError",
    "OutboxLimits",
    "OutgoingData",
    "PendingCommand",
    "RebirthCommand",
    "ReplyTo",
    "ReturnEvent",
    "SecurityEvent",
    "SecurityEventKind",
    "SelftestCommand",
    "SignedCommand",
    "SigningError",
    "SlotDisableCommand",
    "SlotEnableCommand",
    "SlotSnapshot",
    "StateChange",
    "StockReport",
    "StorageError",
    "SystemClock",
    "TlsConfig",
    "Topics",
    "UnknownCommandError",
    "parse_message",
    "public_key_base64",
    "sign_command",
    "unlock_token_for",
]
