"""The control socket server: one task per client, owned and cancelled by the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.api import (
    ApiError,
    ApiErrorCode,
    DaemonApi,
    EventsParams,
    MaintenanceEjectParams,
    NoParams,
    OrderParams,
    SlotDisableParams,
    SlotParams,
)
from gateway.control.wire import (
    MAX_REQUEST_BYTES,
    ControlSocketInUseError,
    ControlSocketSetupError,
    Request,
    describe_validation,
    encode,
    error_reply,
    parse_request,
)

logger = logging.getLogger(__name__)

_MAX_UNIX_PATH_BYTES = 108  # sun_path size on Linux, including the terminating NUL

MAX_CLIENTS = 16
"""Connected clients served at once; a client beyond this gets an `unavailable` error."""

REQUEST_READ_TIMEOUT_S = 60.0
"""Time a connected client has to send its next request line before it is disconnected."""

WRITE_TIMEOUT_S = 10.0
"""Time a client has to read a reply or event before it is disconnected."""


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


class ControlServer:
    """Server of a `DaemonApi` on a Unix socket. Each client runs in a task the server owns."""

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
        if len(os.fsencode(self._path)) >= _MAX_UNIX_PATH_BYTES:
            raise ControlSocketSetupError(
                f"control socket path {self._path} is longer than {_MAX_UNIX_PATH_BYTES - 1} "
                "bytes, the limit for Unix sockets on Linux: configure a shorter path"
            )
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
            await self._reject_client(writer)
            return
        self._clients.add(task)
        try:
            await self._serve_client(client_id, reader, writer)
        except Exception:
            # A bug in serving one client must not reach asyncio's handler or other clients.
            logger.exception("control client %d: unexpected error, disconnected", client_id)
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _reject_client(self, writer: asyncio.StreamWriter) -> None:
        reply = error_reply(None, ApiErrorCode.UNAVAILABLE, "too many control clients, retry later")
        with contextlib.suppress(OSError, TimeoutError):
            writer.write(encode(reply))
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
                    await self._send(
                        writer, error_reply(None, ApiErrorCode.INVALID_REQUEST, message)
                    )
                    return
                if not line.endswith(b"\n"):
                    return  # end of stream, possibly after a partial line
                if not line.strip():
                    continue
                if not await self._handle_line(client_id, line, reader, writer):
                    return
        except TimeoutError:
            logger.info("control client %d idle or too slow, disconnected", client_id)
        except ConnectionError as error:
            logger.debug("control client %d connection lost: %s", client_id, error)

    async def _handle_line(
        self,
        client_id: int,
        line: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Handle one request line and return False when the connection should end."""
        request = parse_request(line)
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
            await self._send(writer, error_reply(request.id, ApiErrorCode.UNKNOWN_METHOD, message))
            return True

        reply = await self._call(client_id, request, method)
        await self._send(writer, reply)
        return True

    async def _call(self, client_id: int, request: Request, method: _Method) -> dict[str, Any]:
        try:
            params = method.params.model_validate(request.params)
        except ValidationError as error:
            message = f"invalid params for {request.method}: {describe_validation(error)}"
            logger.info("control client %d: %s", client_id, message)
            return error_reply(request.id, ApiErrorCode.INVALID_PARAMS, message)

        logger.debug("control client %d calls %s %s", client_id, request.method, request.params)
        try:
            result = await method.call(self._api, params)
        except ApiError as error:
            logger.info("control client %d: %s failed: %s", client_id, request.method, error)
            return error_reply(request.id, error.code, error.message)
        except Exception:
            logger.exception("control client %d: %s raised", client_id, request.method)
            return error_reply(
                request.id, ApiErrorCode.INTERNAL, "internal error in the daemon, see its log"
            )
        return {"id": request.id, "result": result.model_dump(mode="json", by_alias=True)}

    async def _stream_events(
        self,
        client_id: int,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            params = EventsParams.model_validate(request.params)
        except ValidationError as error:
            message = f"invalid params for events: {describe_validation(error)}"
            await self._send(writer, error_reply(request.id, ApiErrorCode.INVALID_PARAMS, message))
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
            await self._send(writer, error_reply(request_id, error.code, error.message))
            return
        except (ConnectionError, TimeoutError):
            raise
        except Exception:
            logger.exception("control client %d: events raised", client_id)
            message = "internal error in the daemon, see its log"
            await self._send(writer, error_reply(request_id, ApiErrorCode.INTERNAL, message))
            return
        await self._send(writer, {"id": request_id, "result": {"events": count}})

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(encode(message))
        async with asyncio.timeout(self._write_timeout_s):
            await writer.drain()
