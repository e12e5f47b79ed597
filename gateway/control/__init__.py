"""The local control socket: newline-delimited JSON over a Unix stream socket.

A request is one line `{"id": 1, "method": "status", "params": {}}`. The reply is one line
`{"id": 1, "result": ...}` or `{"id": 1, "error": {"code": "...", "message": "..."}}`. The
streaming method `events` sends `{"id": 1, "event": ...}` lines and, unless it follows new
events, a final result line `{"id": 1, "result": {"events": N}}`. A client may send several
requests on one connection, one after the other. A stream ends the connection.

Access control is the file mode: the socket is owned by the daemon's user (root in the field),
belongs to the configured group and has mode 0660. There is no network listener.
"""

from gateway.control.client import ControlClient
from gateway.control.server import METHODS, ControlServer
from gateway.control.wire import (
    DEFAULT_SOCKET_PATH,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    ControlAccessDeniedError,
    ControlError,
    ControlProtocolError,
    ControlSocketInUseError,
    ControlSocketSetupError,
    ControlTimeoutError,
    DaemonNotRunningError,
)

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "METHODS",
    "ControlAccessDeniedError",
    "ControlClient",
    "ControlError",
    "ControlProtocolError",
    "ControlServer",
    "ControlSocketInUseError",
    "ControlSocketSetupError",
    "ControlTimeoutError",
    "DaemonNotRunningError",
]
