"""Fixtures for the cabinet simulator tests: an empty cabinet on a manual clock, and a master."""

from __future__ import annotations

import pytest

from cabinet_sim import BankMix, Cabinet, ManualClock, SimConfig
from protocol.slotbus import (
    BoardEvent,
    Command,
    Deframer,
    Empty,
    EventAck,
    EventBatch,
    EventsRequest,
    Frame,
    Message,
    Status,
    decode_response,
    encode_request,
)


class Master:
    """A bus master for tests, talking to the cabinet through `handle_bytes`."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self.deframer = Deframer()
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = (self.sequence + 1) & 0xFF
        return self.sequence

    def frames(self, data: bytes) -> list[Frame]:
        return self.deframer.feed(self.cabinet.handle_bytes(data))

    def exchange(self, address: int, command: Command, body: Message) -> Frame | None:
        frames = self.frames(encode_request(address, self.next_sequence(), command, body))
        assert len(frames) <= 1
        return frames[0] if frames else None

    def call(self, address: int, command: Command, body: Message | None = None) -> Message:
        """Send a request and return the decoded OK response; raise BoardError otherwise."""
        frame = self.exchange(address, command, body if body is not None else Empty())
        assert frame is not None, f"board {address} did not answer {command.name}"
        return decode_response(frame).body

    def status(self, address: int, command: Command, body: Message | None = None) -> Status:
        frame = self.exchange(address, command, body if body is not None else Empty())
        assert frame is not None, f"board {address} did not answer {command.name}"
        return Status(frame.payload[0])

    def read_events(self, address: int, count: int = 9) -> EventBatch:
        batch = self.call(address, Command.READ_EVENTS, EventsRequest(count))
        assert isinstance(batch, EventBatch)
        return batch

    def drain_events(self, address: int) -> list[BoardEvent]:
        """Read and acknowledge every pending event of a board."""
        events: list[BoardEvent] = []
        while True:
            batch = self.read_events(address)
            if not batch.events:
                return events
            events.extend(batch.events)
            ack = EventAck(batch.events[-1].event_id, batch.boot_count)
            self.call(address, Command.ACK_EVENTS, ack)


def empty_config(**changes: object) -> SimConfig:
    """A 4 x 6 cabinet that starts without banks."""
    values: dict[str, object] = {"banks": BankMix(fill_ratio=0.0)}
    values.update(changes)
    return SimConfig.model_validate(values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cabinet(clock: ManualClock) -> Cabinet:
    return Cabinet(empty_config(), clock=clock)


@pytest.fixture
def master(cabinet: Cabinet) -> Master:
    master = Master(cabinet)
    for address in cabinet.boards:
        master.drain_events(address)
    return master
