"""GZXJ ASCII protocol between the host and a station board (docs/protocol-gzxj.md)."""

from protocol.gzxj.codec import Decoded, Role, decode_frame, decode_text, encode_message, role_of
from protocol.gzxj.codes import Command, RentResult, Side
from protocol.gzxj.commands import COMMANDS, CommandSpec, command_spec
from protocol.gzxj.deframer import Deframer, DeframerStats
from protocol.gzxj.errors import (
    ChecksumError,
    FrameError,
    GzxjError,
    PayloadError,
    UnknownCommandError,
)
from protocol.gzxj.frame import Frame, checksum, encode_frame, parse_frame
from protocol.gzxj.messages import (
    ForceUnlockReply,
    ForceUnlockRequest,
    Message,
    QueryRequest,
    RentConfirm,
    RentReply,
    RentRequest,
    RentSlotRequest,
    ReturnConfirm,
    ReturnReport,
    RulesReply,
    RulesRequest,
    SlotRecord,
    SlotReport,
    message_fields,
)

__all__ = [
    "COMMANDS",
    "ChecksumError",
    "Command",
    "CommandSpec",
    "Decoded",
    "Deframer",
    "DeframerStats",
    "ForceUnlockReply",
    "ForceUnlockRequest",
    "Frame",
    "FrameError",
    "GzxjError",
    "Message",
    "PayloadError",
    "QueryRequest",
    "RentConfirm",
    "RentReply",
    "RentRequest",
    "RentResult",
    "RentSlotRequest",
    "ReturnConfirm",
    "ReturnReport",
    "Role",
    "RulesReply",
    "RulesRequest",
    "Side",
    "SlotRecord",
    "SlotReport",
    "UnknownCommandError",
    "checksum",
    "command_spec",
    "decode_frame",
    "decode_text",
    "encode_frame",
    "encode_message",
    "message_fields",
    "parse_frame",
    "role_of",
]
