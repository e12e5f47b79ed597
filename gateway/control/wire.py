"""Control socket framing shared by server and client: limits, errors and request parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.api import ApiErrorCode

MAX_REQUEST_BYTES = 64 * 1024
"""Maximum request line length. A longer line gets an invalid_request error and is closed."""

MAX_REPLY_BYTES = 16 * 1024 * 1024
"""Longest reply line the client reads (a support bundle with its log lines is the largest)."""

DEFAULT_SOCKET_PATH = Path("/run/cabinet-gateway/control.sock")


class ControlError(Exception):
    """Base of the control socket errors (server set-up and client side)."""


class ControlSocketInUseError(ControlError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"another process is listening on the control socket {path}")
        self.path = path


class ControlSocketSetupError(ControlError):
    pass


class DaemonNotRunningError(ControlError):
    """The daemon is not running: the socket file is missing, or no process listens on it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"daemon not running ({reason} at {path})")
        self.path = path
        self.reason = reason  # "no_socket" or "connection_refused"


class ControlAccessDeniedError(ControlError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"permission denied on the control socket {path}")
        self.path = path


class ControlProtocolError(ControlError):
    """The daemon sent a reply this client cannot read, or closed the connection early."""


class ControlTimeoutError(ControlError):
    def __init__(self, method: str, timeout_s: float) -> None:
        super().__init__(f"no reply to {method} within {timeout_s:g} s")
        self.method = method
        self.timeout_s = timeout_s


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def error_reply(request_id: Any, code: ApiErrorCode, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code.value, "message": message}}


def describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "params"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


class Request:
    """One parsed request line."""

    def __init__(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        self.id = request_id
        self.method = method
        self.params = params


def parse_request(line: bytes) -> Request | dict[str, Any]:
    """Return the request, or the error reply to send for a malformed line."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return error_reply(
            None, ApiErrorCode.INVALID_REQUEST, f"request is not valid JSON: {error}"
        )
    if not isinstance(message, dict):
        return error_reply(None, ApiErrorCode.INVALID_REQUEST, "request must be a JSON object")

    request_id = message.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, int | str)
    ):
        return error_reply(None, ApiErrorCode.INVALID_REQUEST, "id must be an integer or a string")
    method = message.get("method")
    if not isinstance(method, str):
        return error_reply(request_id, ApiErrorCode.INVALID_REQUEST, "method must be a string")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return error_reply(request_id, ApiErrorCode.INVALID_PARAMS, "params must be a JSON object")
    return Request(request_id, method, params)
