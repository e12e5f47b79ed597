"""The GZXJ line: framing, increasing message ids and one request at a time to the station."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge.clock import Clock, wait_future
from firmware_bridge.errors import BridgeError, NotConnectedError, PortLostError
from firmware_bridge.transport import ByteLink
from protocol.gzxj import (
    Command,
    Deframer,
    GzxjError,
    Message,
    decode_frame,
    encode_message,
)
from protocol.gzxj.constants import DEFAULT_ADDRESS, MAX_ID

logger = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 1.0
"""Wait for the AC reply to CQ; a 48-slot report is about 0.14 s of wire time at 115200 baud."""

RENT_TIMEOUT_S = 7.0
"""Wait for a rent or force-unlock reply. A station answers TIMEOUT only after waiting on the
slot itself (5 s in the simulator), so this must be longer than that wait."""

Matcher = Callable[[Command, Message], bool]


class StationTimeoutError(BridgeError):
    """The station did not answer a request within its reply timeout."""


@dataclass(slots=True)
class _Pending:
    matches: Matcher
    future: asyncio.Future[Message]


class GzxjLine:
    """Writes host frames and hands station frames to a reply waiter or to `on_unsolicited`.

    Message ids only grow, also across restarts of the gateway: each one is the wall time in
    milliseconds, or the previous id plus one when the clock has not moved on.
    """

    def __init__(self, clock: Clock, address: str = DEFAULT_ADDRESS) -> None:
        self._clock = clock
        self.address = address
        self.deframer = Deframer()
        self.frames_sent = 0
        self.bytes_sent = 0
        self._link: ByteLink | None = None
        self._last_message_id = 0
        self._pending: _Pending | None = None
        self._exchange = asyncio.Lock()

    def next_message_id(self) -> int:
        # NOTE: a wall clock set back by more than the time since the last frame makes ids
        # repeat until it catches up; the station then ignores those frames.
        candidate = min(int(self._clock.wall() * 1000), MAX_ID)
        self._last_message_id = max(candidate, self._last_message_id + 1)
        return self._last_message_id

    def attach(self, link: ByteLink | None) -> None:
        self._link = link
        self.deframer.reset()
        if link is None and self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(NotConnectedError("serial port closed"))

    async def send(self, command: Command, body: Message) -> None:
        """Write one frame that expects no reply (BR, the RS confirmation)."""
        link = self._link
        if link is None:
            raise NotConnectedError("serial port closed")
        text = encode_message(command, body, self.address)
        logger.debug("gzxj -> %s", text)
        data = text.encode("ascii") + b"\r\n"
        self.frames_sent += 1
        self.bytes_sent += len(data)
        try:
            await link.write(data)
        except PortLostError as exc:
            # The reader sees the loss too and reopens the port; callers treat it as closed.
            raise NotConnectedError(str(exc)) from exc

    async def request(
        self,
        command: Command,
        body: Message,
        matches: Matcher,
        timeout_s: float,
        *,
        before_write: Callable[[], None] | None = None,
    ) -> Message:
        """Send a request and return the first station message that `matches`.

        Raise StationTimeoutError when none arrives within `timeout_s` of the clock.
        `before_write` runs right before the write and may raise to cancel it.
        """
        async with self._exchange:
            future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending = _Pending(matches, future)
            try:
                if before_write is not None:
                    before_write()
                await self.send(command, body)
                reply = await wait_future(self._clock, future, timeout_s)
            finally:
                self._pending = None
                if not future.done():
                    future.cancel()
            if reply is None:
                raise StationTimeoutError(f"no reply to {command} within {timeout_s:.1f} s")
            return reply

    def feed(self, data: bytes) -> list[tuple[Command, Message]]:
        """Decode received bytes; return the station messages that answered no request."""
        unsolicited: list[tuple[Command, Message]] = []
        for frame in self.deframer.feed(data):
            if frame.address != self.address:
                continue
            try:
                decoded = decode_frame(frame)
            except GzxjError as exc:
                logger.warning("gzxj frame %s dropped: %s", frame.command, exc)
                continue
            command = decoded.spec.command
            logger.debug("gzxj <- %s %s", command, decoded.body)
            pending = self._pending
            waiting = pending is not None and not pending.future.done()
            if waiting and pending is not None and pending.matches(command, decoded.body):
                pending.future.set_result(decoded.body)
                continue
            unsolicited.append((command, decoded.body))
        return unsolicited
