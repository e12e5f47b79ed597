"""Drains the outbox over one MQTT connection with a bounded in-flight window.

The publisher hands each row to paho from its own loop and settles it in a callback on the
PUBACK future, without a task or a timeout per message. One timer, at the deadline of the
oldest row in flight, bounds the wait for PUBACKs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_link.clock import Clock
from cloud_link.config import OutboxLimits
from cloud_link.messages import Lane
from cloud_link.mqtt_client import (
    RC_FIRST_ERROR,
    RC_NO_MATCHING_SUBSCRIBERS,
    LinkClient,
    PackedProperties,
    PendingPuback,
    PublishFailedError,
    new_properties,
)
from cloud_link.outbox import Outbox
from cloud_link.outbox_rows import OutboxEntry

logger = logging.getLogger(__name__)


@dataclass
class PublisherCounters:
    published: int = 0
    rejected_by_broker: int = 0
    kept_without_subscribers: int = 0


# Rows acknowledged with a PUBACK are deleted in one transaction once this many wait, or
# after this delay. A delete lost in a crash only repeats a publish with the same `seq`.
ACK_FLUSH_ROWS = 64
ACK_FLUSH_DELAY_S = 0.05

# Upper bound of everything in a PUBLISH packet besides topic, payload and correlation data:
# fixed header (5), topic length (2), packet id (2), properties (payload format, content type,
# expiry, correlation data headers; about 40).
PACKET_OVERHEAD_BYTES = 64


def estimated_packet_size(entry: OutboxEntry) -> int:
    correlation = len(entry.correlation_data or b"")
    return PACKET_OVERHEAD_BYTES + len(entry.topic.encode()) + len(entry.payload) + correlation


def suspect_key(entry: OutboxEntry) -> str:
    return entry.coalesce_key or f"id:{entry.id}"


class _InFlight(NamedTuple):
    entry: OutboxEntry
    puback: PendingPuback
    deadline: float  # event loop time by which the PUBACK must arrive


class Publisher:
    """Publishes outbox rows in lane order; one instance lives as long as the link."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        limits: OutboxLimits,
        clock: Clock,
        mqtt5: bool,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        self._limits = limits
        self._clock = clock
        self._mqtt5 = mqtt5
        self._on_progress = on_progress
        self._wakeup = asyncio.Event()
        self._settled = asyncio.Event()
        # Rows handed to paho on the current connection, by row id, oldest first.
        self._in_flight: dict[int, _InFlight] = {}
        # The first error of a PUBACK future on the current connection.
        self._failure: aiomqtt.MqttError | None = None
        # Wakes the loop at the PUBACK deadline of the row that was oldest when it was set.
        self._deadline_timer: asyncio.TimerHandle | None = None
        # Rows kept after "no matching subscribers", with the monotonic time of the retry.
        self._deferred: dict[int, tuple[Lane, float]] = {}
        # Rows in flight when a connection failed: how often each failed while sent alone.
        # Keyed by `suspect_key`, so a birth replaced on every connect keeps its count.
        self._suspects: dict[str, int] = {}
        self._interrupted: set[str] = set()
        self._solo: str | None = None
        # Rows whose PUBACK arrived but that are not deleted yet, never published again.
        self._acked: list[int] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        # Properties per expiry for rows without correlation data: paho only reads them.
        self._shared_properties: dict[int | None, Properties] = {}
        self.counters = PublisherCounters()

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def idle(self) -> bool:
        """Return whether nothing is in flight and nothing can be published right now."""
        self._flush_acked()
        return not self._in_flight and not self._publishable(1, None)

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight and nothing is ready to publish."""
        while not self.idle():
            self._settled.clear()
            await self._settled.wait()

    async def run(self, client: LinkClient, ack_timeout_s: float) -> None:
        """Publish until cancelled or the connection fails (raises `aiomqtt.MqttError`)."""
        self._in_flight.clear()
        self._interrupted.clear()
        self._failure = None
        failed = False
        try:
            while True:
                self._wakeup.clear()
                self._raise_on_failure(ack_timeout_s)
                window = min(self._limits.max_in_flight, client.receive_maximum)
                room = window - len(self._in_flight)
                for entry in self._publishable(room, client.max_packet_size):
                    self._send(client, entry, ack_timeout_s)
                self._arm_deadline_timer()
                await self._wait_for_work()
        except aiomqtt.MqttError:
            failed = True
            raise
        finally:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
            # When the receiver notices a lost connection first, this run is cancelled instead
            # of failing. paho has then failed every PUBACK future of the connection already.
            if failed or self._failure is not None or self._any_puback_failed():
                self._interrupted.update(
                    suspect_key(flight.entry) for flight in self._in_flight.values()
                )
                self._suspect_interrupted()
            self._in_flight.clear()
            self._flush_acked()

    def _send(self, client: LinkClient, entry: OutboxEntry, ack_timeout_s: float) -> None:
        key = suspect_key(entry)
        if key in self._suspects:
            self._solo = key
        try:
            puback = client.publish_nowait(
                entry.topic,
                entry.payload,
                qos=entry.qos,
                retain=entry.retain,
                properties=self._properties(entry),
            )
        except PublishFailedError as exc:
            self._outbox.move_to_dead_letters(entry.id, f"client refused: {exc}", None)
            self._suspects.pop(key, None)
            self._after_settle()
            return
        except aiomqtt.MqttError:
            self._interrupted.add(key)
            raise
        deadline = asyncio.get_running_loop().time() + ack_timeout_s
        flight = _InFlight(entry, puback, deadline)
        self._in_flight[entry.id] = flight
        self._on_progress()
        puback.future.add_done_callback(partial(self._on_puback, flight))

    def _on_puback(self, flight: _InFlight, future: asyncio.Future[int]) -> None:
        """Settle a row once its PUBACK future is done; runs as the future's callback."""
        error = None if future.cancelled() else future.exception()
        if self._in_flight.get(flight.entry.id) is not flight:
            return  # the run of this connection has ended; the row is published again
        if future.cancelled() or error is not None:
            if self._failure is None:
                self._failure = (
                    error
                    if isinstance(error, aiomqtt.MqttError)
                    else aiomqtt.MqttError(f"PUBACK of message id {flight.puback.mid} failed")
                )
            self._wakeup.set()
            return  # the row stays in flight until `run` ends and marks it interrupted
        del self._in_flight[flight.entry.id]
        self._suspects.pop(suspect_key(flight.entry), None)
        self._settle(flight.entry, future.result())
        self._after_settle()

    def _after_settle(self) -> None:
        self._wakeup.set()
        self._settled.set()
        self._on_progress()

    def _raise_on_failure(self, ack_timeout_s: float) -> None:
        """Raise the connection's first PUBACK failure, or a timeout of the oldest row."""
        if self._failure is not None:
            raise self._failure
        oldest = next(iter(self._in_flight.values()), None)
        if oldest is not None and asyncio.get_running_loop().time() >= oldest.deadline:
            raise aiomqtt.MqttError(
                f"no PUBACK for message id {oldest.puback.mid} within {ack_timeout_s} s"
            )

    def _arm_deadline_timer(self) -> None:
        # Deadlines grow in the order rows were sent, so a timer set for the oldest row fires
        # no later than the deadline of any row that is oldest later. It is set again then.
        if self._deadline_timer is not None or not self._in_flight:
            return
        oldest = next(iter(self._in_flight.values()))
        self._deadline_timer = asyncio.get_running_loop().call_at(
            oldest.deadline, self._deadline_reached
        )

    def _deadline_reached(self) -> None:
        self._deadline_timer = None
        self._wakeup.set()

    def _any_puback_failed(self) -> bool:
        return any(
            flight.puback.future.done()
            and (flight.puback.future.cancelled() or flight.puback.future.exception() is not None)
            for flight in self._in_flight.values()
        )

    def _suspect_interrupted(self) -> None:
        """Mark rows that were in flight when the connection failed.

        Some brokers (Mosquitto 2.0 with `message_size_limit`, for one) close the connection
        instead of rejecting a message. Suspects are then sent one at a time; a suspect that
        fails alone `max_publish_attempts` times is dead-lettered instead of blocking forever.
        """
        for key in self._interrupted:
            if key not in self._suspects:
                self._suspects[key] = 0
            elif key == self._solo:
                self._suspects[key] += 1
        self._interrupted.clear()
        self._solo = None

    async def _wait_for_work(self) -> None:
        if not self._deferred:
            await self._wakeup.wait()
            return
        next_retry = min(until for _, until in self._deferred.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(next_retry - self._clock.monotonic(), 0.05)):
                await self._wakeup.wait()

    def _publishable(self, room: int, max_packet_size: int | None) -> list[OutboxEntry]:
        if room <= 0:
            return []
        now = self._clock.monotonic()
        for entry_id, (_, until) in list(self._deferred.items()):
            if until <= now:
                del self._deferred[entry_id]
        blocked_lanes = frozenset(lane for lane, _ in self._deferred.values())
        exclude = frozenset(self._in_flight.keys() | self._deferred.keys() | set(self._acked))
        # Read past `room` only when a suspect may be among the next rows.
        limit = room + 64 if self._suspects else room
        read = self._outbox.pending(limit, exclude=exclude, skip_lanes=blocked_lanes)
        candidates = [
            entry for entry in read if not self._dead_lettered_early(entry, max_packet_size)
        ]
        if len(candidates) < len(read):
            self._wakeup.set()  # rows were dead-lettered: read again for the room they left
        suspects = [entry for entry in candidates if suspect_key(entry) in self._suspects]
        if suspects:
            # A suspect goes alone, so a failure can be blamed on it and nothing else.
            return [] if self._in_flight else suspects[:1]
        # A kept row holds back the rest of its lane (`skip_lanes` above), so order within
        # the lane is preserved.
        return candidates[:room]

    def _dead_lettered_early(self, entry: OutboxEntry, max_packet_size: int | None) -> bool:
        """Dead-letter a row that cannot be delivered; True when it was moved."""
        size = estimated_packet_size(entry)
        if max_packet_size is not None and size > max_packet_size:
            reason = f"{size}-byte packet exceeds the broker maximum of {max_packet_size}"
        elif self._suspects.get(suspect_key(entry), 0) >= self._limits.max_publish_attempts:
            attempts = self._suspects[suspect_key(entry)]
            reason = f"connection lost {attempts} times while publishing it alone"
        else:
            return False
        self._suspects.pop(suspect_key(entry), None)
        self._outbox.move_to_dead_letters(entry.id, reason, None)
        return True

    def _settle(self, entry: OutboxEntry, code: int) -> None:
        if code >= RC_FIRST_ERROR:
            self.counters.rejected_by_broker += 1
            self._outbox.move_to_dead_letters(entry.id, "rejected by broker", code)
            return
        # Telemetry, births and other coalesced rows are replaced by newer ones anyway.
        keep = (
            code == RC_NO_MATCHING_SUBSCRIBERS
            and self._limits.keep_without_subscribers
            and entry.lane is not Lane.TELEMETRY
            and entry.coalesce_key is None
        )
        if keep:
            self.counters.kept_without_subscribers += 1
            retry_at = self._clock.monotonic() + self._limits.no_subscriber_retry_s
            self._deferred[entry.id] = (entry.lane, retry_at)
            logger.info(
                "no subscriber for seq=%d on %s; retrying in %.0f s",
                entry.seq,
                entry.topic,
                self._limits.no_subscriber_retry_s,
            )
            return
        self.counters.published += 1
        self._acked.append(entry.id)
        if len(self._acked) >= ACK_FLUSH_ROWS:
            self._flush_acked()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                ACK_FLUSH_DELAY_S, self._flush_acked
            )

    def _flush_acked(self) -> None:
        """Delete the rows whose PUBACK arrived; a lost delete only repeats a publish."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        self._outbox.remove_many(acked)
        self._on_progress()

    def _properties(self, entry: OutboxEntry) -> Properties | None:
        if not self._mqtt5:
            return None
        if entry.correlation_data is None:
            shared = self._shared_properties.get(entry.expiry_s)
            if shared is None:
                shared = self._build_properties(entry, PackedProperties(PacketTypes.PUBLISH))
                self._shared_properties[entry.expiry_s] = shared
            return shared
        return self._build_properties(entry, new_properties(PacketTypes.PUBLISH))

    def _build_properties(self, entry: OutboxEntry, properties: Properties) -> Properties:
        properties.PayloadFormatIndicator = 1
        properties.ContentType = "application/json"
        if entry.expiry_s is not None:
            properties.MessageExpiryInterval = entry.expiry_s
        if entry.correlation_data is not None:
            properties.CorrelationData = entry.correlation_data
        return properties
