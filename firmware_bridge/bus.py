"""Request/response on the slot bus: one exchange at a time, replies matched by sequence."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge.clock import Clock, pause, wait_future
from firmware_bridge.config import BridgeConfig, EchoMode
from firmware_bridge.errors import (
    BoardRejectedError,
    NotConnectedError,
    PortLostError,
    RequestTimeoutError,
)
from firmware_bridge.prioritylock import PriorityLock, Reservation
from firmware_bridge.stats import BusCounters, BusStats, percentile
from firmware_bridge.transport import ByteLink
from protocol.slotbus import (
    BoardError,
    Command,
    Deframer,
    Frame,
    Message,
    ProtocolError,
    command_spec,
    decode_response,
    encode_request,
)
from protocol.slotbus.constants import BITS_PER_BYTE, CRC_SIZE, HEADER_SIZE, MAX_PAYLOAD

logger = logging.getLogger(__name__)

PRIORITY_EJECT = 0
PRIORITY_COMMAND = 1
PRIORITY_POLL = 2

INTER_FRAME_BYTES = 3.5
"""Silence between exchanges, in byte times, so that boards see a frame boundary."""

ECHO_BACKLOG = 4
"""Written frames kept for recognising their echo; a retry can follow a late echo."""

EJECT_NOTICE_HOLD_S = 0.1
"""Maximum time an announced eject keeps other requests off the bus (`reserve_for_eject`)."""


async def _let_input_in() -> None:
    """Let the event loop read the input that is ready before going on.

    A poll that follows the previous exchange at once would otherwise write its request
    before the loop has read the MQTT connection again, so an eject command that arrived
    meanwhile would find the bus taken. The first yield puts this task into the next loop
    pass. That pass polls the sockets without waiting and queues their callbacks behind this
    task, and the second yield lets those callbacks run first. The MQTT read callback
    reserves the bus for an eject command (`reserve_for_eject`), so the poll then waits. A
    timer would also let the input in, but with no input ready it waits for the next tick of
    epoll (1 ms).
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@dataclass(slots=True)
class _Pending:
    command: Command
    reply: asyncio.Future[Message]


class BusClient:
    """Send requests to boards and match their replies; the caller feeds it a ByteLink."""

    def __init__(self, config: BridgeConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._lock = PriorityLock()
        self._link: ByteLink | None = None
        self._deframer = Deframer()
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._sequences: dict[int, int] = {}
        self._unechoed: deque[bytes] = deque(maxlen=ECHO_BACKLOG)  # oldest first
        self._quiet_until = 0.0  # clock time before which the next request must not start
        self._next_hold_at = 0.0  # loop time before which `reserve_for_eject` starts no hold
        self._hold: Reservation | None = None  # the last hold of `reserve_for_eject`
        self._overtaken: list[asyncio.Future[None]] = []  # see `_yield_to_overtaker`
        self.counters = BusCounters()

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def lock_holder(self) -> int | None:
        """Priority of the request that has the bus now; None while the bus is free."""
        return self._lock.holder

    @property
    def holding_for_eject(self) -> bool:
        """Whether a hold of `reserve_for_eject` keeps polls off the bus right now."""
        return self._hold is not None and self._lock.pending(self._hold)

    def reserve_for_eject(self, hold_s: float = EJECT_NOTICE_HOLD_S) -> None:
        """Start no other request until an eject request takes the bus, at most `hold_s`.

        For an eject command that is still being checked and stored: a poll started in that
        time would hold the bus when the UNLOCK is ready, for up to a whole status read. An
        exchange already running finishes first. The hold runs on the event loop's clock.
        One hold runs at a time. After a hold that no eject used (a duplicate or rejected
        command), the next starts `hold_s` later at the earliest. A flood of such commands
        therefore leaves the polls, and with them the returns, at least half of the time.
        """
        loop = asyncio.get_running_loop()
        if self.holding_for_eject or loop.time() < self._next_hold_at:
            return
        self._hold = self._lock.reserve(PRIORITY_EJECT)
        loop.call_later(hold_s, self._end_hold, self._hold, hold_s)

    def release_eject_hold(self) -> None:
        """End the hold of `reserve_for_eject` now: the command it waited for is no eject.

        The next hold waits as after a hold that ran out, so a flood of rejected commands
        keeps the bus from the polls only while each one is checked.
        """
        if self._hold is not None and self.holding_for_eject:
            self._end_hold(self._hold, EJECT_NOTICE_HOLD_S)

    def _end_hold(self, reservation: Reservation, hold_s: float) -> None:
        if reservation is self._hold:
            self._hold = None
        if self._lock.withdraw(reservation):
            self._next_hold_at = asyncio.get_running_loop().time() + hold_s

    def _byte_time_s(self) -> float:
        return BITS_PER_BYTE / self._config.baudrate

    async def pump(self, link: ByteLink) -> None:
        """Serve `link` until it fails; raise PortLostError then. Pending requests fail fast."""
        self._deframer.reset()
        self._unechoed.clear()
        self._link = link
        try:
            while True:
                data = await link.read()
                for frame in self._deframer.feed(data):
                    self._dispatch(frame)
        finally:
            self._link = None
            self._deframer.reset()
            for pending in self._pending.values():
                if not pending.reply.done():
                    pending.reply.set_exception(PortLostError("serial port lost"))

    def _dispatch(self, frame: Frame) -> None:
        if not frame.is_response:
            self._note_request_frame(frame)
            return
        pending = self._pending.get((frame.address, frame.sequence))
        if pending is None or pending.reply.done() or frame.command_id != pending.command:
            self.counters.unmatched_replies += 1
            logger.debug("unmatched reply from board %d seq %d", frame.address, frame.sequence)
            return
        try:
            response = decode_response(frame)
        except BoardError as exc:
            pending.reply.set_exception(BoardRejectedError(exc))
            return
        except ProtocolError as exc:
            # A malformed reply counts like a lost one: the attempt times out and is repeated.
            self.counters.unmatched_replies += 1
            logger.warning("invalid reply from board %d: %s", frame.address, exc)
            return
        pending.reply.set_result(response.body)

    def _note_request_frame(self, frame: Frame) -> None:
        if self._config.echo is not EchoMode.OFF:
            data = frame.encode()
            if data in self._unechoed:
                # Echoes come back in the order of writing: frames written before this one
                # have lost theirs.
                while self._unechoed.popleft() != data:
                    pass
                self.counters.echoes += 1
                return
        self.counters.foreign_frames += 1
        logger.warning(
            "request frame 0x%02X for board %d read from the bus: another master or an "
            "unexpected echo",
            frame.command,
            frame.address,
        )

    def reply_timeout_s(self, command: Command, request_size: int) -> float:
        """Wire time of the request and the longest response, board allowance and margin."""
        spec = command_spec(command)
        allowance = spec.reply_timeout_s if spec else 0.5
        longest_reply = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
        wire = (request_size + longest_reply) * self._byte_time_s()
        if self._config.echo is not EchoMode.OFF:
            wire += request_size * self._byte_time_s()
        return wire + allowance + self._config.reply_margin_s

    async def request(
        self,
        address: int,
        command: Command,
        body: Message,
        *,
        retries: int,
        priority: int = PRIORITY_POLL,
        check_before_write: Callable[[], None] | None = None,
    ) -> Message:
        """Send a request, repeating after a lost reply up to `retries` times.

        `check_before_write`, when given, runs right before every write, under the bus
        lock; an exception from it ends the request without writing. Board status errors
        raise BoardRejectedError at once and are never repeated here.
        """
        board = self.counters.board(address)
        for attempt in range(retries + 1):
            if attempt:
                board.retries += 1
                logger.debug(
                    "repeating %s to board %d, attempt %d", command.name, address, attempt + 1
                )
            reply = await self._attempt(address, command, body, priority, check_before_write)
            if reply is not None:
                return reply
        raise RequestTimeoutError(address, command, retries + 1)

    async def _attempt(
        self,
        address: int,
        command: Command,
        body: Message,
        priority: int,
        check_before_write: Callable[[], None] | None,
    ) -> Message | None:
        board = self.counters.board(address)
        if priority >= PRIORITY_POLL:
            # The silence first and the input last, so that a command read in the silence
            # still reserves the bus before this poll takes it.
            await pause(self._clock, self._quiet_until - self._clock.monotonic())
            await _let_input_in()
        async with self._lock.hold(priority):
            link = self._link
            if link is None:
                raise NotConnectedError("serial port is not open")
            # The silence between exchanges has usually passed while the reply was handled.
            await pause(self._clock, self._quiet_until - self._clock.monotonic())
            if check_before_write is not None:
                check_before_write()
            sequence = (self._sequences.get(address, -1) + 1) & 0xFF
            self._sequences[address] = sequence
            frame = encode_request(address, sequence, command, body)
            key = (address, sequence)
            reply: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending[key] = _Pending(command, reply)
            try:
                if self._config.echo is not EchoMode.OFF:
                    self._unechoed.append(frame)
                board.requests += 1
                await link.write(frame)
                self._wake_overtaken()
                self.counters.frames_sent += 1
                self.counters.bytes_sent += len(frame)
                started = self._clock.monotonic()
                result = await wait_future(
                    self._clock, reply, self.reply_timeout_s(command, len(frame))
                )
            finally:
                del self._pending[key]
                if not reply.done():
                    reply.cancel()
                elif not reply.cancelled():
                    reply.exception()  # retrieved, so a failure after cancellation is not logged
                self._quiet_until = (
                    self._clock.monotonic() + INTER_FRAME_BYTES * self._byte_time_s()
                )
        await self._yield_to_overtaker(priority)
        if result is None:
            board.timeouts += 1
            return None
        board.replies += 1
        board.latencies.append(self._clock.monotonic() - started)
        return result

    async def _yield_to_overtaker(self, priority: int) -> None:
        """After an exchange, wait until a request of higher priority that took the bus next
        has been written.

        The lock passed to that request as this exchange ended, but its task runs only after
        this one yields. Handling a poll's reply first (events, slot states, the outbox) can
        keep the loop busy for a millisecond or more while an UNLOCK waits. The wait also
        ends when that holder releases the lock without writing, for example when its task
        was cancelled as the lock reached it.
        """
        holder = self._lock.holder
        if holder is None or holder >= priority:
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._overtaken.append(written)
        self._lock.watch_release(written)
        await written

    def _wake_overtaken(self) -> None:
        """Let the exchanges waiting in `_yield_to_overtaker` go on once the holder wrote.

        A holder that releases the bus without writing wakes them through the lock.
        """
        waiting, self._overtaken = self._overtaken, []
        for written in waiting:
            if not written.done():
                written.set_result(None)

    def stats(self, addresses: tuple[int, ...]) -> BusStats:
        counters = self.counters
        boards = tuple(counters.board(address).freeze(address) for address in addresses)
        samples = [s for address in addresses for s in counters.board(address).latencies]
        deframer = self._deframer.stats
        return BusStats(
            frames_sent=counters.frames_sent,
            frames_received=deframer.frames,
            bytes_sent=counters.bytes_sent,
            bytes_received=deframer.bytes_in,
            bytes_dropped=deframer.bytes_dropped,
            crc_errors=deframer.crc_errors,
            timeouts=sum(b.timeouts for b in boards),
            retries=sum(b.retries for b in boards),
            echoes=counters.echoes,
            foreign_frames=counters.foreign_frames,
            unmatched_replies=counters.unmatched_replies,
            latency_p50_s=percentile(samples, 0.5),
            latency_p99_s=percentile(samples, 0.99),
            reopens=counters.reopens,
            port_open=self.connected,
            boards=boards,
        )
