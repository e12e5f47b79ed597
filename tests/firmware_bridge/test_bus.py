"""The request layer on a scripted byte link: matching, timeouts, echo and priorities."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from firmware_bridge import (
    BoardRejectedError,
    BridgeConfig,
    EchoMode,
    NotConnectedError,
    RequestTimeoutError,
)
from firmware_bridge.bus import PRIORITY_EJECT, PRIORITY_POLL, BusClient
from firmware_bridge.clock import SystemClock
from firmware_bridge.prioritylock import PriorityLock, Reservation
from protocol.slotbus import (
    Command,
    Deframer,
    Empty,
    EventAck,
    EventAckResult,
    Frame,
    SlotRef,
    Status,
    decode_request,
    encode_error,
    encode_response,
)

Responder = Callable[[Frame], list[bytes]]

WAIT_S = 5.0
"""Maximum wait for an event that a passing test gets far sooner."""


class ScriptedLink:
    """A ByteLink whose replies come from `respond`, delivered in chunks of `chunk` bytes."""

    def __init__(self, respond: Responder, *, echo: bool = False, chunk: int = 1) -> None:
        self.respond = respond
        self.echo = echo
        self.chunk = chunk
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.requests: list[Frame] = []

    @property
    def description(self) -> str:
        return "scripted"

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        if self.echo:
            self.incoming.put_nowait(data)
        for frame in Deframer().feed(data):
            self.requests.append(frame)
            for reply in self.respond(frame):
                for start in range(0, len(reply), self.chunk):
                    self.incoming.put_nowait(reply[start : start + self.chunk])

    def close(self) -> None:
        return None


def ack_reply(frame: Frame) -> list[bytes]:
    return [encode_response(frame.address, frame.sequence, Command.ACK_EVENTS, EventAckResult(0))]


def config(**overrides: object) -> BridgeConfig:
    values: dict[str, object] = {"port": "scripted", "boards": [{"address": 1, "slot_count": 4}]}
    values.update(overrides)
    return BridgeConfig.model_validate(values)


@contextlib.asynccontextmanager
async def pumped(bus: BusClient, link: ScriptedLink) -> AsyncIterator[None]:
    task = asyncio.create_task(bus.pump(link))
    await asyncio.sleep(0)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reply_byte_by_byte_matches() -> None:
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(ack_reply, chunk=1)
    async with pumped(bus, link):
        reply = await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0)

    assert reply == EventAckResult(0)
    assert bus.stats((1,)).frames_received == 1


async def test_stale_reply_is_not_taken_for_new() -> None:
    """A late reply to the first attempt carries the old sequence and is ignored."""
    late: list[bytes] = []

    def respond(frame: Frame) -> list[bytes]:
        replies = ack_reply(frame)
        if not late:
            late.extend(replies)  # first attempt: the reply is held back
            return []
        return [*late, *replies]

    bus = BusClient(config(reply_margin_s=0.01), SystemClock())
    link = ScriptedLink(respond)
    async with pumped(bus, link):
        await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=1)
    stats = bus.stats((1,))

    assert stats.retries == 1
    assert stats.timeouts == 1
    assert stats.unmatched_replies == 1
    assert [frame.sequence for frame in link.requests] == [0, 1]


async def test_timeout_leaves_no_pending() -> None:
    bus = BusClient(config(reply_margin_s=0.0), SystemClock())
    link = ScriptedLink(lambda _: [])
    async with pumped(bus, link):
        with pytest.raises(RequestTimeoutError, match="after 3 attempt"):
            await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=2)

    assert bus._pending == {}
    assert len(link.requests) == 3


async def test_status_error_raises_without_retry() -> None:
    def respond(frame: Frame) -> list[bytes]:
        return [encode_error(frame.address, frame.sequence, frame.command_id, Status.NO_BANK)]

    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(respond)
    async with pumped(bus, link):
        with pytest.raises(BoardRejectedError, match="NO_BANK"):
            await bus.request(1, Command.GET_BANK, SlotRef(1), retries=3)

    assert len(link.requests) == 1


@pytest.mark.parametrize(
    ("mode", "echoes", "foreign"), [(EchoMode.AUTO, 1, 0), (EchoMode.OFF, 0, 1)]
)
async def test_echo_modes(mode: EchoMode, echoes: int, foreign: int) -> None:
    bus = BusClient(config(echo=mode), SystemClock())
    link = ScriptedLink(ack_reply, echo=True, chunk=4)
    async with pumped(bus, link):
        reply = await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0)
    stats = bus.stats((1,))

    assert reply == EventAckResult(0)
    assert stats.echoes == echoes
    assert stats.foreign_frames == foreign


async def test_late_echo_after_retry_is_discarded() -> None:
    """A line that stalls delivers the first attempt's echo after the retry was written."""
    stalled_writes: list[bytes] = []

    class StallingLink(ScriptedLink):
        async def write(self, data: bytes) -> None:
            if not stalled_writes:
                stalled_writes.append(data)  # first attempt: nothing comes back yet
                return
            for item in (*stalled_writes, data):
                self.incoming.put_nowait(item)
            for frame in Deframer().feed(data):
                self.requests.append(frame)
                for reply in ack_reply(frame):
                    self.incoming.put_nowait(reply)

    bus = BusClient(config(echo=EchoMode.AUTO, reply_margin_s=0.01), SystemClock())
    link = StallingLink(ack_reply)
    async with pumped(bus, link):
        reply = await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=1)
    stats = bus.stats((1,))

    assert reply == EventAckResult(0)
    assert stats.retries == 1
    assert stats.echoes == 2
    assert stats.foreign_frames == 0


async def test_request_without_port_fails() -> None:
    bus = BusClient(config(), SystemClock())
    with pytest.raises(NotConnectedError, match="not open"):
        await bus.request(1, Command.IDENTIFY, Empty(), retries=0)


async def test_priority_lock_serves_ejects_first() -> None:
    lock = PriorityLock()
    order: list[str] = []
    await lock.acquire(PRIORITY_POLL)

    async def take(name: str, priority: int) -> None:
        async with lock.hold(priority):
            order.append(name)

    tasks = [
        asyncio.create_task(take("poll-1", PRIORITY_POLL)),
        asyncio.create_task(take("poll-2", PRIORITY_POLL)),
        asyncio.create_task(take("eject", PRIORITY_EJECT)),
    ]
    await asyncio.sleep(0)
    lock.release()
    await asyncio.gather(*tasks)

    assert order == ["eject", "poll-1", "poll-2"]
    assert not lock.locked


async def test_priority_lock_survives_cancelled_waiter() -> None:
    lock = PriorityLock()
    await lock.acquire(PRIORITY_POLL)
    waiter = asyncio.create_task(lock.acquire(PRIORITY_EJECT))
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    lock.release()

    assert not lock.locked


async def reserved_lock_with_poll() -> tuple[PriorityLock, Reservation, asyncio.Task[None]]:
    """Return a free lock reserved for ejects, and a poll task kept waiting by it."""
    lock = PriorityLock()
    reservation = lock.reserve(PRIORITY_EJECT)
    poll = asyncio.create_task(lock.acquire(PRIORITY_POLL))
    await asyncio.sleep(0)
    assert not poll.done()
    assert not lock.locked
    return lock, reservation, poll


async def test_reservation_blocks_polls_until_used() -> None:
    lock, reservation, poll = await reserved_lock_with_poll()

    await lock.acquire(PRIORITY_EJECT)  # meets the reservation: no wait, and uses it up
    assert lock.reserved == 0
    lock.release()
    async with asyncio.timeout(WAIT_S):
        await poll
    assert lock.locked
    lock.withdraw(reservation)  # already used: changes nothing
    lock.release()
    assert not lock.locked


async def test_withdrawn_reservation_frees_poll() -> None:
    lock, reservation, poll = await reserved_lock_with_poll()

    lock.withdraw(reservation)
    async with asyncio.timeout(WAIT_S):
        await poll
    assert lock.locked
    assert lock.reserved == 0


async def test_reserved_bus_writes_eject_first() -> None:
    """A poll due while an eject command is still being stored waits for the eject's request."""
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(ack_reply)
    async with pumped(bus, link):
        bus.reserve_for_eject(hold_s=WAIT_S)
        poll = asyncio.create_task(bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0))
        for _ in range(5):
            await asyncio.sleep(0)
        assert link.requests == []  # the bus is free, and still the poll waits

        await bus.request(1, Command.ACK_EVENTS, EventAck(2, 2), retries=0, priority=PRIORITY_EJECT)
        async with asyncio.timeout(WAIT_S):
            await poll
        bus.reserve_for_eject(hold_s=0.01)  # the last hold was used, so the next starts at once
        assert bus.holding_for_eject

    assert [decode_request(frame).body for frame in link.requests] == [
        EventAck(2, 2),
        EventAck(1, 1),
    ]


@contextlib.contextmanager
def command_socket(bus: BusClient, read: asyncio.Event) -> Iterator[socket.socket]:
    """Yield the sending end of a socket pair whose read callback reserves the bus.

    The callback stands for the MQTT connection: the gateway reserves the bus from there as
    soon as it reads a payload that may hold an eject. It sets `read` once it has run.
    """
    loop = asyncio.get_running_loop()
    incoming, outgoing = socket.socketpair()

    def on_input() -> None:
        incoming.recv(16)
        bus.reserve_for_eject(WAIT_S)
        read.set()

    loop.add_reader(incoming, on_input)
    try:
        yield outgoing
    finally:
        loop.remove_reader(incoming)
        incoming.close()
        outgoing.close()


async def test_poll_lets_waiting_input_reserve_first() -> None:
    """A command already in a socket when a poll is due reserves the bus before the poll."""
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(ack_reply)
    read = asyncio.Event()
    async with pumped(bus, link):
        with command_socket(bus, read) as command:
            command.send(b"x")  # ready before the poll task takes its first step
            poll = asyncio.create_task(
                bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0)
            )
            async with asyncio.timeout(WAIT_S):
                await read.wait()
            assert bus.holding_for_eject
            assert link.requests == []
            await bus.request(
                1, Command.ACK_EVENTS, EventAck(2, 2), retries=0, priority=PRIORITY_EJECT
            )
            async with asyncio.timeout(WAIT_S):
                await poll

    assert [decode_request(frame).body for frame in link.requests] == [
        EventAck(2, 2),
        EventAck(1, 1),
    ]


async def test_command_read_in_the_silence_goes_first() -> None:
    """A command read while a poll waits out the silence after an exchange goes before it.

    At 1200 baud the silence takes 29 ms, long enough for a timer, so the loop reads input
    during it. A poll that took the bus before that silence would write first.
    """
    bus = BusClient(config(baudrate=1200), SystemClock())
    link = ScriptedLink(ack_reply)
    read = asyncio.Event()
    async with pumped(bus, link):
        with command_socket(bus, read) as command:
            await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0)
            poll = asyncio.create_task(
                bus.request(1, Command.ACK_EVENTS, EventAck(2, 2), retries=0)
            )
            for _ in range(5):
                await asyncio.sleep(0)
            command.send(b"x")  # arrives within the silence
            await bus.request(
                1, Command.ACK_EVENTS, EventAck(3, 3), retries=0, priority=PRIORITY_EJECT
            )
            async with asyncio.timeout(WAIT_S):
                await poll

    assert read.is_set()
    assert [decode_request(frame).body for frame in link.requests] == [
        EventAck(1, 1),
        EventAck(3, 3),
        EventAck(2, 2),
    ]


async def test_poll_reply_waits_for_overtaking_write() -> None:
    """An eject that waited for a poll's exchange is written before the poll's caller goes on.

    The caller handles the reply next (events, slot states, the outbox), which could keep the
    event loop busy while the UNLOCK waits.
    """
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(lambda frame: [])  # replies are sent by the test

    async def poll_then_count() -> int:
        await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0)
        return len(link.requests)

    async with pumped(bus, link):
        poll = asyncio.create_task(poll_then_count())
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(link.requests) == 1
        eject = asyncio.create_task(
            bus.request(1, Command.ACK_EVENTS, EventAck(2, 2), retries=0, priority=PRIORITY_EJECT)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(link.requests) == 1  # the eject waits for the poll's exchange
        link.incoming.put_nowait(ack_reply(link.requests[0])[0])
        async with asyncio.timeout(WAIT_S):
            requests_when_poll_returned = await poll
        link.incoming.put_nowait(ack_reply(link.requests[1])[0])
        async with asyncio.timeout(WAIT_S):
            await eject

    assert requests_when_poll_returned == 2


async def test_poll_goes_on_when_overtaker_is_cancelled() -> None:
    """A poll waiting for the eject that took the bus from it goes on when that eject is
    cancelled before it writes: the lock reached the eject's task, which then released it."""
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(lambda frame: [])  # replies are sent by the test
    async with pumped(bus, link):
        poll = asyncio.create_task(bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0))
        for _ in range(5):
            await asyncio.sleep(0)
        eject = asyncio.create_task(
            bus.request(1, Command.ACK_EVENTS, EventAck(2, 2), retries=0, priority=PRIORITY_EJECT)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        link.incoming.put_nowait(ack_reply(link.requests[0])[0])
        for _ in range(10):
            await asyncio.sleep(0)
            if bus.lock_holder == PRIORITY_EJECT:
                break
        assert len(link.requests) == 1  # the lock reached the eject, which has not run yet
        eject.cancel()
        async with asyncio.timeout(WAIT_S):
            assert await poll == EventAckResult(0)

    assert eject.cancelled()
    assert len(link.requests) == 1


async def poll_behind_hold(bus: BusClient, hold_s: float) -> asyncio.Task[object]:
    """Start a hold and a poll; return the poll's task once it has waited a few loop turns."""
    bus.reserve_for_eject(hold_s=hold_s)
    poll = asyncio.create_task(bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not poll.done()
    return poll


async def test_released_hold_frees_bus_at_once() -> None:
    """A command that turned out to be no eject gives the bus back before its hold ends."""
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(ack_reply)
    async with pumped(bus, link):
        poll = await poll_behind_hold(bus, 3600.0)

        bus.release_eject_hold()
        assert not bus.holding_for_eject
        async with asyncio.timeout(WAIT_S):
            assert await poll == EventAckResult(0)
        bus.reserve_for_eject(hold_s=3600.0)  # right after an unused hold, none starts
        assert not bus.holding_for_eject


async def test_unused_reservation_expires() -> None:
    """A reservation whose eject never comes (a duplicate, a rejection) frees the bus."""
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(ack_reply)
    async with pumped(bus, link):
        poll = await poll_behind_hold(bus, 0.05)
        async with asyncio.timeout(WAIT_S):
            assert await poll == EventAckResult(0)


async def test_unused_hold_gives_polls_a_turn() -> None:
    """Repeated commands that never eject cannot keep the polls, and so the returns, away."""
    bus = BusClient(config(), SystemClock())
    link = ScriptedLink(ack_reply)
    async with pumped(bus, link):
        bus.reserve_for_eject(hold_s=0.05)
        bus.reserve_for_eject(hold_s=0.05)  # one hold at a time
        assert bus.holding_for_eject
        async with asyncio.timeout(WAIT_S):
            await bus.request(1, Command.ACK_EVENTS, EventAck(1, 1), retries=0)
        assert not bus.holding_for_eject  # ran out unused

        bus.reserve_for_eject(hold_s=0.05)
        assert not bus.holding_for_eject
