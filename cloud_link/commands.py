"""Command requests the cloud sends to a cabinet, and what the handler receives.

On the wire a request is a `SignedCommand`: the JSON text of a `CommandBody` carried as a
string, an Ed25519 signature over the exact UTF-8 bytes of that string, and the id of the
signing key. Verifying it needs no canonical JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cloud_link.messages import (
    CommandId,
    CommandRejectReason,
    CommandResult,
    CommandStatus,
    EjectReport,
    SlotNumber,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EjectCommand(_Frozen):
    """Eject a bank; without `slot` the cabinet chooses the fullest rentable bank."""

    type: Literal["eject"] = "eject"
    slot: SlotNumber | None = None
    order_id: str | None = Field(default=None, max_length=64)


class SlotDisableCommand(_Frozen):
    """Take a slot out of service; it stays disabled across restarts."""

    type: Literal["slot_disable"] = "slot_disable"
    slot: SlotNumber
    reason: str | None = Field(default=None, max_length=200)


class SlotEnableCommand(_Frozen):
    type: Literal["slot_enable"] = "slot_enable"
    slot: SlotNumber


class LockCommand(_Frozen):
    """Close the lock of one slot, or of every slot when `slot` is absent."""

    type: Literal["lock"] = "lock"
    slot: SlotNumber | None = None


class SelftestCommand(_Frozen):
    type: Literal["selftest"] = "selftest"


class RebirthCommand(_Frozen):
    """Publish a fresh birth; the cloud link handles it without the gateway handler."""

    type: Literal["rebirth"] = "rebirth"


Command = Annotated[
    EjectCommand
    | SlotDisableCommand
    | SlotEnableCommand
    | LockCommand
    | SelftestCommand
    | RebirthCommand,
    Field(discriminator="type"),
]

COMMAND_TYPES: tuple[str, ...] = (
    "eject",
    "slot_disable",
    "slot_enable",
    "lock",
    "selftest",
    "rebirth",
)


class CommandBody(_Frozen):
    """The signed part of a command request."""

    cabinet_id: str = Field(max_length=64)
    command_id: CommandId
    issued_at: AwareDatetime
    deadline: AwareDatetime = Field(description="The command must not act after this time.")
    command: Command


class SignedCommand(_Frozen):
    """The payload on the command topic."""

    key_id: str = Field(min_length=1, max_length=64)
    body: str = Field(description="JSON text of a CommandBody, signed byte for byte.")
    sig: str = Field(description="Base64 of the Ed25519 signature over the UTF-8 bytes of body.")


@dataclass(frozen=True)
class AcceptedCommand:
    """A verified, unexpired command handed to the gateway handler.

    `deadline_monotonic` is on the `time.monotonic()` scale of the link's clock. The handler
    must not start bus work after it, and reports `EjectRejectReason.EXPIRED` instead.
    """

    command_id: str
    command: EjectCommand | SlotDisableCommand | SlotEnableCommand | LockCommand | SelftestCommand
    key_id: str
    received_monotonic: float
    deadline_monotonic: float
    unlock_token: int


@dataclass(frozen=True)
class CommandOutcome:
    """Final outcome from the handler; the link turns it into the published `CommandResult`."""

    status: CommandStatus
    detail: str | None = None
    eject: EjectReport | None = None
    reject_reason: CommandRejectReason | None = None  # for example EXPIRED or NOT_SUPPORTED

    def to_result(self, command_id: str, command: str) -> CommandResult:
        return CommandResult(
            command_id=command_id,
            command=command,
            status=self.status,
            reject_reason=self.reject_reason,
            detail=None if self.detail is None else self.detail[:300],
            eject=self.eject,
        )
