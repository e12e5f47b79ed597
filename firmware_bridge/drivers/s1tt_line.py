"""The S1TT line: frames that end at a silent gap, one request at a time, 50 ms apart."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from firmware_bridge.clock import Clock, wait_future
from firmware_bridge.drivers.gzxj_line import StationTimeoutError
from firmware_bridge.errors import NotConnectedError, PortLostError
from firmware_bridge.transport import ByteLink
from protocol.s1tt import (
    BoardError,
    Command,
    Deframer,
    Frame,
    Message,
    S1ttError,
    decode_reply,
    encode_request,
)
from protocol.s1tt.constants import COMMAND_SPACING_S, INTER_FRAME_GAP_S

logger = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 2.0
"""Wait for a reply, as the public driver does. A board retries a silent bank before it
replies TIMEOUT. NOTE: the vendor's description allows 5 s; a board that needs longer is
counted as silent."""


class BoardTimeoutError(StationTimeoutError):
    """An S1TT board sent no reply within REPLY_TIMEOUT_S."""


@dataclass(slots=True)
class _Pending:
    address: int
    command: Command
    written: bytes  # the request, to recognise an adapter's echo of it
    future: asyncio.Future[Message]
    echo_pending: bool  # the adapter's copy of the request has not arrived yet


class S1ttLine:
    """Sends requests and matches replies by board address and command byte.

    The line is silent for INTER_FRAME_GAP_S before `Deframer.gap()` ends a segment. A frame
    that matches no pending request (a late reply, another board's) is counted and dropped.
    With `echo` the first copy of the request itself is taken as the adapter's echo.
    """

    def __init__(self, clock: Clock, *, echo: bool = False) -> None:
        self._clock = clock
        self._echo = echo
        self.deframer = Deframer()
        self.frames_sent = 0
        self.bytes_sent = 0
        self.unmatched = 0
        self._link: ByteLink | None = None
        self._pending: _Pending | None = None
        self._exchange = asyncio.Lock()
        self._gap_timer: asyncio.TimerHandle | None = None

    def attach(self, link: ByteLink | None) -> None:
        self._link = link
        self.deframer.reset()
        if link is None and self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(NotConnectedError("serial port closed"))

    def feed(self, data: bytes) -> None:
        """Take received bytes; the frames are decoded once the line falls silent."""
        for frame in self.deframer.feed(data):
            self._dispatch(frame)
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        loop = asyncio.get_running_loop()
        self._gap_timer = loop.call_later(INTER_FRAME_GAP_S, self._on_gap)

    def _on_gap(self) -> None:
        self._gap_timer = None
        for frame in self.deframer.gap():
            self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        pending = self._pending
        if (
            pending is None
            or pending.future.done()
            or frame.address != pending.address
            or frame.command_id != pending.command
        ):
            self.unmatched += 1
            return
        if pending.echo_pending and frame.encode() == pending.written:
            # STATUS of slot 1 and its TIMEOUT reply are the same bytes, so only an adapter
            # configured to echo makes the first copy an echo.
            pending.echo_pending = False
            return
        try:
            reply = decode_reply(frame)
        except BoardError as exc:
            pending.future.set_exception(exc)
            return
        except S1ttError as exc:
            logger.warning("s1tt reply of board %d dropped: %s", frame.address, exc)
            self.unmatched += 1
            return
        pending.future.set_result(reply.body)

    async def request(self, address: int, command: Command, body: Message) -> Message:
        """Send one request and return the reply body; never repeats it.

        Raise BoardTimeoutError without a reply, the BoardError of a status other than OK,
        or NotConnectedError when the port is closed.
        """
        async with self._exchange:
            link = self._link
            if link is None:
                raise NotConnectedError("serial port closed")
            future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            data = encode_request(address, command, body)
            self._pending = _Pending(address, command, data, future, self._echo)
            try:
                logger.debug("s1tt -> %s", data.hex(" "))
                self.frames_sent += 1
                self.bytes_sent += len(data)
                try:
                    await link.write(data)
                except PortLostError as exc:
                    # The reader sees the loss too and reopens the port.
                    raise NotConnectedError(str(exc)) from exc
                reply = await wait_future(self._clock, future, REPLY_TIMEOUT_S)
            finally:
                self._pending = None
                if not future.done():
                    future.cancel()
                await self._clock.sleep(COMMAND_SPACING_S)
            if reply is None:
                raise BoardTimeoutError(
                    f"no reply from board {address} to {command.name} within {REPLY_TIMEOUT_S} s"
                )
            return reply
