"""Blocking client of the control socket, used by the diagnostics CLI."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.api import (
    SCHEMA_VERSION,
    ApiError,
    ApiErrorCode,
    BankReply,
    BusReply,
    EventRecord,
    MaintenanceEjectReply,
    OrderEvidence,
    OutboxReply,
    SelfTestResult,
    SlotInfo,
    SlotsReply,
    StatusReply,
    SupportBundle,
)
from gateway.control.wire import (
    MAX_REPLY_BYTES,
    ControlAccessDeniedError,
    ControlError,
    ControlProtocolError,
    ControlTimeoutError,
    DaemonNotRunningError,
    describe_validation,
    encode,
)

ReplyT = TypeVar("ReplyT", bound=BaseModel)


class ControlClient:
    """Blocking client of the control socket, one connection per call (the CLI is synchronous).

    Calls raise DaemonNotRunningError, ControlAccessDeniedError, ControlTimeoutError,
    ControlProtocolError, or ApiError for an error the daemon sent.
    """

    def __init__(self, path: Path, timeout_s: float = 10.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._next_id = 1
        self._buffer = bytearray()

    def status(self) -> StatusReply:
        return self._typed("status", {}, StatusReply)

    def slots(self) -> SlotsReply:
        return self._typed("slots", {}, SlotsReply)

    def bank(self, slot: int) -> BankReply:
        return self._typed("bank", {"slot": slot}, BankReply)

    def bus(self) -> BusReply:
        return self._typed("bus", {}, BusReply)

    def outbox(self) -> OutboxReply:
        return self._typed("outbox", {}, OutboxReply)

    def selftest(self, slot: int, timeout_s: float = 60.0) -> SelfTestResult:
        return self._typed("selftest", {"slot": slot}, SelfTestResult, timeout_s)

    def slot_disable(self, slot: int, reason: str) -> SlotInfo:
        return self._typed("slot.disable", {"slot": slot, "reason": reason}, SlotInfo)

    def slot_enable(self, slot: int) -> SlotInfo:
        return self._typed("slot.enable", {"slot": slot}, SlotInfo)

    def maintenance_eject(
        self, slot: int, reason: str, technician: str, timeout_s: float = 120.0
    ) -> MaintenanceEjectReply:
        params = {"slot": slot, "reason": reason, "technician": technician}
        return self._typed("eject.maintenance", params, MaintenanceEjectReply, timeout_s)

    def order(self, order_id: str) -> OrderEvidence:
        return self._typed("order", {"order_id": order_id}, OrderEvidence)

    def bundle(self) -> SupportBundle:
        return self._typed("bundle", {}, SupportBundle, 60.0)

    def events(self, follow: bool, limit: int) -> Generator[EventRecord, None, None]:
        """Yield event records; with `follow` this runs until the caller stops iterating."""
        params = {"follow": follow, "limit": limit}
        timeout_s = None if follow else self.timeout_s
        for payload in self.stream("events", params, timeout_s):
            yield self._validate(EventRecord, payload)

    def call(self, method: str, params: dict[str, Any], timeout_s: float | None = None) -> Any:
        """Send one request and return the JSON `result` of its reply."""
        with self._connect(timeout_s or self.timeout_s) as conn:
            request_id = self._send(conn, method, params)
            message = self._read(conn, method, timeout_s or self.timeout_s)
            return self._result(message, request_id)

    def stream(
        self, method: str, params: dict[str, Any], timeout_s: float | None
    ) -> Generator[Any, None, None]:
        """Send one streaming request and yield each event payload until the final reply."""
        with self._connect(timeout_s or self.timeout_s) as conn:
            request_id = self._send(conn, method, params)
            conn.settimeout(timeout_s)
            while True:
                message = self._read(conn, method, timeout_s)
                if "event" in message:
                    yield message["event"]
                    continue
                self._result(message, request_id)
                return

    def _typed(
        self,
        method: str,
        params: dict[str, Any],
        model: type[ReplyT],
        timeout_s: float | None = None,
    ) -> ReplyT:
        return self._validate(model, self.call(method, params, timeout_s))

    @staticmethod
    def _validate(model: type[ReplyT], payload: Any) -> ReplyT:
        if isinstance(payload, dict):
            schema = payload.get("schema", SCHEMA_VERSION)
            if schema != SCHEMA_VERSION:
                raise ControlProtocolError(
                    f"the daemon replied with schema {schema}, this CLI reads schema "
                    f"{SCHEMA_VERSION}: install matching gateway and CLI versions"
                )
        try:
            return model.model_validate(payload)
        except ValidationError as error:
            raise ControlProtocolError(
                f"invalid {model.__name__} from the daemon: {describe_validation(error)}"
            ) from error

    @contextlib.contextmanager
    def _connect(self, timeout_s: float) -> Iterator[socket.socket]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout_s)
        try:
            conn.connect(str(self.path))
        except FileNotFoundError as error:
            conn.close()
            raise DaemonNotRunningError(self.path, "no_socket") from error
        except ConnectionRefusedError as error:
            conn.close()
            raise DaemonNotRunningError(self.path, "connection_refused") from error
        except PermissionError as error:
            conn.close()
            raise ControlAccessDeniedError(self.path) from error
        except OSError as error:  # for example a path too long for a Unix socket
            conn.close()
            raise ControlError(f"cannot connect to {self.path}: {error}") from error
        try:
            with conn:
                self._buffer = bytearray()
                yield conn
        finally:
            self._buffer = bytearray()

    def _send(self, conn: socket.socket, method: str, params: dict[str, Any]) -> int:
        request_id = self._next_id
        self._next_id += 1
        try:
            conn.sendall(encode({"id": request_id, "method": method, "params": params}))
        except TimeoutError as error:
            raise ControlTimeoutError(method, conn.gettimeout() or 0.0) from error
        except OSError as error:
            raise ControlProtocolError(
                f"connection lost while sending {method}: {error}"
            ) from error
        return request_id

    def _read(self, conn: socket.socket, method: str, timeout_s: float | None) -> dict[str, Any]:
        searched = 0  # bytes of the buffer already known to contain no newline
        while (end := self._buffer.find(b"\n", searched)) < 0:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise ControlProtocolError(f"reply to {method} larger than {MAX_REPLY_BYTES} bytes")
            searched = len(self._buffer)
            try:
                chunk = conn.recv(65536)
            except TimeoutError as error:
                raise ControlTimeoutError(method, timeout_s or 0.0) from error
            except OSError as error:
                raise ControlProtocolError(f"connection lost during {method}: {error}") from error
            if not chunk:
                raise ControlProtocolError(f"the daemon closed the connection during {method}")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ControlProtocolError(f"reply to {method} is not valid JSON: {error}") from error
        if not isinstance(message, dict):
            raise ControlProtocolError(f"reply to {method} is not a JSON object")
        return message

    @staticmethod
    def _result(message: dict[str, Any], request_id: int) -> Any:
        error = message.get("error")
        if isinstance(error, dict):
            raw_code = str(error.get("code", ""))
            text = str(error.get("message", ""))
            try:
                code = ApiErrorCode(raw_code)
            except ValueError:
                code, text = ApiErrorCode.INTERNAL, f"{raw_code}: {text}"
            raise ApiError(code, text)
        if message.get("id") != request_id or "result" not in message:
            raise ControlProtocolError(f"unexpected reply from the daemon: {message!r:.200}")
        return message["result"]
