"""The local control socket: newline-delimited JSON over a Unix stream socket.

A request is one line `{"id": 1, "method": "status", "params": {}}`. The reply is one line
`{"id": 1, "result": ...}` or `{"id": 1, "error": {"code": "...", "message": "..."}}`. The
streaming method `events` sends `{"id": 1, "event": ...}` lines and, unless it follows new
events, a final result line `{"id": 1, "result": {"events": N}}`. A client may send several
requests on one connection, one after the other. A stream ends the connection.

Access control is the file mode: the socket is owned by the daemon's user (root in the field),
belongs to the configured group and has mode 0660. There is no network listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import stat
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.api import (
    SCHEMA_VERSION,
    ApiError,
    ApiErrorCode,
    BankReply,
    BusReply,
    DaemonApi,
    EventRecord,
    EventsParams,
    MaintenanceEjectParams,
    MaintenanceEjectReply,
    NoParams,
    OrderEvidence,
    OrderParams,
    OutboxReply,
    SelfTestResult,
    SlotDisableParams,
    SlotInfo,
    SlotParams,
    SlotsReply,
    StatusReply,
    SupportBundle,
)

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
"""Longest request line accepted; a longer one is answered with invalid_request and closed."""

MAX_REPLY_BYTES = 16 * 1024 * 1024
"""Longest reply line the client reads (a support bundle with its log lines is the largest)."""

MAX_CLIENTS = 16
REQUEST_READ_TIMEOUT_S = 60.0
"""Time a connected client has to send its next request line before it is disconnected."""

WRITE_TIMEOUT_S = 10.0
"""Time a client has to read a reply or event before it is disconnected."""

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
    """The daemon is not running: no socket file, or nobody listens on it."""

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


# --- method table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Method:
    params: type[BaseModel]
    call: Callable[[DaemonApi, Any], Awaitable[BaseModel]]


_METHODS: dict[str, _Method] = {
    "status": _Method(NoParams, lambda api, _: api.status()),
    "slots": _Method(NoParams, lambda api, _: api.slots()),
    "bank": _Method(SlotParams, lambda api, p: api.bank(p.slot)),
    "bus": _Method(NoParams, lambda api, _: api.bus()),
    "outbox": _Method(NoParams, lambda api, _: api.outbox()),
    "selftest": _Method(SlotParams, lambda api, p: api.selftest(p.slot)),
    "slot.disable": _Method(SlotDisableParams, lambda api, p: api.slot_disable(p.slot, p.reason)),
    "slot.enable": _Method(SlotParams, lambda api, p: api.slot_enable(p.slot)),
    "eject.maintenance": _Method(
        MaintenanceEjectParams,
        lambda api, p: api.maintenance_eject(p.slot, p.reason, p.technician),
    ),
    "order": _Method(OrderParams, lambda api, p: api.order(p.order_id)),
    "bundle": _Method(NoParams, lambda api, _: api.bundle()),
}
STREAM_METHODS = frozenset({"events"})
METHODS = frozenset(_METHODS) | STREAM_METHODS


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _error(request_id: Any, code: ApiErrorCode, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code.value, "message": message}}


def _describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "params"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


class _Request:
    """One parsed request line."""

    def __init__(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        self.id = request_id
        self.method = method
        self.params = params


def _parse_request(line: bytes) -> _Request | dict[str, Any]:
    """Return the request, or the error reply to send for a malformed line."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return _error(None, ApiErrorCode.INVALID_REQUEST, f"request is not valid JSON: {error}")
    if not isinstance(message, dict):
        return _error(None, ApiErrorCode.INVALID_REQUEST, "request must be a JSON object")

    request_id = message.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, int | str)
    ):
        return _error(None, ApiErrorCode.INVALID_REQUEST, "id must be an integer or a string")
    method = message.get("method")
    if not isinstance(method, str):
        return _error(request_id, ApiErrorCode.INVALID_REQUEST, "method must be a string")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return _error(request_id, ApiErrorCode.INVALID_PARAMS, "params must be a JSON object")
    return _Request(request_id, method, params)


# --- server ---------------------------------------------------------------------------------


class ControlServer:
    """Serve a `DaemonApi` on a Unix socket; each client runs in a task the server owns."""

    def __init__(
        self,
        api: DaemonApi,
        path: Path,
        group: str | None,
        mode: int = 0o660,
        *,
        read_timeout_s: float = REQUEST_READ_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._api = api
        self._path = path
        self._group = group
        self._mode = mode
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._next_client = 1

    @property
    def path(self) -> Path:
        return self._path

    async def start(self) -> None:
        """Bind the socket, set its group and mode, and start accepting clients.

        Raises ControlSocketInUseError when another process listens on the path, and
        ControlSocketSetupError when the path is not a socket or the group cannot be set.
        """
        await self._remove_stale_socket()
        # NOTE: between bind and chmod the socket has the mode the umask allows, so the
        # parent directory should be 0750 or stricter (systemd RuntimeDirectoryMode).
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self._path), limit=MAX_REQUEST_BYTES
        )
        self._inode = self._path.stat().st_ino
        try:
            self._set_owner_and_mode()
        except BaseException:
            await self.close()
            raise
        logger.info("control socket listening on %s (group %s)", self._path, self._group)

    async def close(self) -> None:
        """Stop accepting, cancel and await every client task, and remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        self._remove_own_socket()

    async def _remove_stale_socket(self) -> None:
        try:
            mode = self._path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketSetupError(
                f"{self._path} exists and is not a socket: remove it or configure another path"
            )
        try:
            _, writer = await asyncio.open_unix_connection(str(self._path))
        except (ConnectionRefusedError, FileNotFoundError):
            logger.info("removing stale control socket %s", self._path)
            self._path.unlink(missing_ok=True)
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        raise ControlSocketInUseError(self._path)

    def _set_owner_and_mode(self) -> None:
        if self._group is not None:
            try:
                shutil.chown(self._path, group=self._group)
            except LookupError as error:
                raise ControlSocketSetupError(
                    f"control socket group {self._group!r} does not exist: create it or "
                    "change the configured group"
                ) from error
            except PermissionError as error:
                raise ControlSocketSetupError(
                    f"cannot give {self._path} to group {self._group!r}: {error}"
                ) from error
        os.chmod(self._path, self._mode)

    def _remove_own_socket(self) -> None:
        if self._inode is None:
            return
        try:
            if self._path.lstat().st_ino == self._inode:
                self._path.unlink()
        except FileNotFoundError:
            pass
        self._inode = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or self._server is None:
            writer.close()
            return
        client_id = self._next_client
        self._next_client += 1
        if len(self._clients) >= self._max_clients:
            logger.warning(
                "control client %d rejected: %d clients connected", client_id, len(self._clients)
            )
            await self._refuse(writer)
            return
        self._clients.add(task)
        try:
            await self._serve_client(client_id, reader, writer)
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        reply = _error(None, ApiErrorCode.UNAVAILABLE, "too many control clients, retry later")
        with contextlib.suppress(OSError, TimeoutError):
            writer.write(_encode(reply))
            async with asyncio.timeout(self._write_timeout_s):
                await writer.drain()
        writer.close()

    async def _serve_client(
        self, client_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        logger.debug("control client %d connected", client_id)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._read_timeout_s):
                        line = await reader.readline()
                except ValueError:
                    # StreamReader raises ValueError when a line exceeds its limit.
                    logger.warning(
                        "control client %d sent a request over %d bytes",
                        client_id,
                        MAX_REQUEST_BYTES,
                    )
                    message = f"request larger than {MAX_REQUEST_BYTES} bytes"
                    await self._send(writer, _error(None, ApiErrorCode.INVALID_REQUEST, message))
                    return
                if not line.endswith(b"\n"):
                    return  # end of stream, possibly after a partial line
                if not line.strip():
                    continue
                if not await self._handle_line(client_id, line, reader, writer):
                    return
        except TimeoutError:
            logger.info("control client %d idle or too slow, disconnected", client_id)
        except (ConnectionError, BrokenPipeError) as error:
            logger.debug("control client %d connection lost: %s", client_id, error)

    async def _handle_line(
        self,
        client_id: int,
        line: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request line; return False when the connection should end."""
        request = _parse_request(line)
        if isinstance(request, dict):
            logger.info("control client %d: %s", client_id, request["error"]["message"])
            await self._send(writer, request)
            return True

        if request.method in STREAM_METHODS:
            await self._stream_events(client_id, request, reader, writer)
            return False
        method = _METHODS.get(request.method)
        if method is None:
            known = ", ".join(sorted(METHODS))
            message = f"unknown method {request.method!r}, expected one of: {known}"
            logger.info("control client %d: %s", client_id, message)
            await self._send(writer, _error(request.id, ApiErrorCode.UNKNOWN_METHOD, message))
            return True

        reply = await self._call(client_id, request, method)
        await self._send(writer, reply)
        return True

    async def _call(self, client_id: int, request: _Request, method: _Method) -> dict[str, Any]:
        try:
            params = method.params.model_validate(request.params)
        except ValidationError as error:
            message = f"invalid params for {request.method}: {_describe_validation(error)}"
            logger.info("control client %d: %s", client_id, message)
            return _error(request.id, ApiErrorCode.INVALID_PARAMS, message)

        logger.debug("control client %d calls %s %s", client_id, request.method, request.params)
        try:
            result = await method.call(self._api, params)
        except ApiError as error:
            logger.info("control client %d: %s failed: %s", client_id, request.method, error)
            return _error(request.id, error.code, error.message)
        except Exception:
            logger.exception("control client %d: %s raised", client_id, request.method)
            return _error(
                request.id, ApiErrorCode.INTERNAL, "internal error in the daemon, see its log"
            )
        return {"id": request.id, "result": result.model_dump(mode="json", by_alias=True)}

    async def _stream_events(
        self,
        client_id: int,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            params = EventsParams.model_validate(request.params)
        except ValidationError as error:
            message = f"invalid params for events: {_describe_validation(error)}"
            await self._send(writer, _error(request.id, ApiErrorCode.INVALID_PARAMS, message))
            return

        # The client ends a follow by closing its side, so watch for end of stream meanwhile.
        pump = asyncio.create_task(self._pump_events(client_id, request.id, params, writer))
        hangup = asyncio.create_task(reader.read(1))
        try:
            await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, hangup):
                task.cancel()
            await asyncio.gather(pump, hangup, return_exceptions=True)
        failure = pump.exception() if pump.done() and not pump.cancelled() else None
        if failure is not None:
            raise failure

    async def _pump_events(
        self, client_id: int, request_id: Any, params: EventsParams, writer: asyncio.StreamWriter
    ) -> None:
        count = 0
        events = self._api.events(params.follow, params.limit)
        try:
            async with contextlib.aclosing(events):
                async for record in events:
                    payload = record.model_dump(mode="json", by_alias=True)
                    await self._send(writer, {"id": request_id, "event": payload})
                    count += 1
        except ApiError as error:
            await self._send(writer, _error(request_id, error.code, error.message))
            return
        except (ConnectionError, TimeoutError):
            raise
        except Exception:
            logger.exception("control client %d: events raised", client_id)
            message = "internal error in the daemon, see its log"
            await self._send(writer, _error(request_id, ApiErrorCode.INTERNAL, message))
            return
        await self._send(writer, {"id": request_id, "result": {"events": count}})

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(_encode(message))
        async with asyncio.timeout(self._write_timeout_s):
            await writer.drain()


# --- client ---------------------------------------------------------------------------------

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
        self._buffer = b""

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
                f"invalid {model.__name__} from the daemon: {_describe_validation(error)}"
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
        except OSError:
            conn.close()
            raise
        try:
            with conn:
                self._buffer = b""
                yield conn
        finally:
            self._buffer = b""

    def _send(self, conn: socket.socket, method: str, params: dict[str, Any]) -> int:
        request_id = self._next_id
        self._next_id += 1
        conn.sendall(_encode({"id": request_id, "method": method, "params": params}))
        return request_id

    def _read(self, conn: socket.socket, method: str, timeout_s: float | None) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise ControlProtocolError(f"reply to {method} larger than {MAX_REPLY_BYTES} bytes")
            try:
                chunk = conn.recv(65536)
            except TimeoutError as error:
                raise ControlTimeoutError(method, timeout_s or 0.0) from error
            if not chunk:
                raise ControlProtocolError(f"the daemon closed the connection during {method}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
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
