"""Drains the outbox over one MQTT connection with a bounded in-flight window."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

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


# Upper bound of everything in a PUBLISH packet besides topic, payload and correlation data:
# fixed header (5), topic length (2), packet id (2), properties (payload format, content type,
# expiry, correlation data headers; about 40).
PACKET_OVERHEAD_BYTES = 64


def estimated_packet_size(entry: OutboxEntry) -> int:
    correlation = len(entry.correlation_data or b"")
    return PACKET_OVERHEAD_BYTES + len(entry.topic.encode()) + len(entry.payload) + correlation


def suspect_key(entry: OutboxEntry) -> str:
    return entry.coalesce_key or f"id:{entry.id}"


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
        self._in_flight: set[int] = set()
        # Rows kept after "no matching subscribers", with the monotonic time of the retry.
        self._deferred: dict[int, tuple[Lane, float]] = {}
        # Rows in flight when a connection failed: how often each failed while sent alone.
        # Keyed by `suspect_key`, so a birth replaced on every connect keeps its count.
        self._suspects: dict[str, int] = {}
        self._interrupted: set[str] = set()
        self._solo: str | None = None
        # Rows whose PUBACK arrived but that are not deleted yet. PUBACKs handled in one
        # event-loop pass are deleted in one transaction, and never before their PUBACK.
        self._acked: list[int] = []
        self._flush_scheduled = False
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
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    self._wakeup.clear()
                    window = min(self._limits.max_in_flight, client.receive_maximum)
                    room = window - len(self._in_flight)
                    for entry in self._publishable(room, client.max_packet_size):
                        if suspect_key(entry) in self._suspects:
                            self._solo = suspect_key(entry)
                        self._in_flight.add(entry.id)
                        self._on_progress()
                        tasks.create_task(
                            self._publish_one(client, entry, ack_timeout_s),
                            name=f"publish-{entry.seq}",
                        )
                    await self._wait_for_work()
        except* aiomqtt.MqttError:
            self._suspect_interrupted()
            raise
        finally:
            self._flush_acked()

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
        timeout = None
        if self._deferred:
            next_retry = min(until for _, until in self._deferred.values())
            timeout = max(next_retry - self._clock.monotonic(), 0.05)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _publishable(self, room: int, max_packet_size: int | None) -> list[OutboxEntry]:
        if room <= 0:
            return []
        self._flush_acked()
        now = self._clock.monotonic()
        for entry_id, (_, until) in list(self._deferred.items()):
            if until <= now:
                del self._deferred[entry_id]
        blocked_lanes = {lane for lane, _ in self._deferred.values()}
        exclude = frozenset(self._in_flight | self._deferred.keys())
        # Read past `room` only when rows may be skipped: a blocked lane or a suspect.
        limit = room + 64 if blocked_lanes or self._suspects else room
        read = self._outbox.pending(limit, exclude=exclude)
        candidates = [
            entry for entry in read if not self._dead_lettered_early(entry, max_packet_size)
        ]
        if len(candidates) < len(read):
            self._wakeup.set()  # rows were dead-lettered: read again for the room they left
        suspects = [entry for entry in candidates if suspect_key(entry) in self._suspects]
        if suspects:
            # A suspect goes alone, so a failure can be blamed on it and nothing else.
            return [] if self._in_flight else suspects[:1]
        # A kept row holds back the rest of its lane, so order within the lane is preserved.
        return [entry for entry in candidates if entry.lane not in blocked_lanes][:room]

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

    async def _publish_one(
        self, client: LinkClient, entry: OutboxEntry, ack_timeout_s: float
    ) -> None:
        code: int | None = None
        try:
            code = await client.publish_acked(
                entry.topic,
                entry.payload,
                qos=entry.qos,
                retain=entry.retain,
                properties=self._properties(entry),
                ack_timeout_s=ack_timeout_s,
            )
        except PublishFailedError as exc:
            self._outbox.move_to_dead_letters(entry.id, f"client refused: {exc}", None)
        except BaseException:
            self._interrupted.add(suspect_key(entry))
            raise
        finally:
            self._in_flight.discard(entry.id)
        self._suspects.pop(suspect_key(entry), None)
        if code is not None:
            self._settle(entry, code)
        self._wakeup.set()
        self._settled.set()
        self._on_progress()

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
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acked)

    def _flush_acked(self) -> None:
        """Delete the rows whose PUBACK arrived; a lost delete only repeats a publish."""
        self._flush_scheduled = False
        acked, self._acked = self._acked, []
        self._outbox.remove_many(acked)

    def _properties(self, entry: OutboxEntry) -> Properties | None:
        if not self._mqtt5:
            return None
        if entry.correlation_data is None:
            shared = self._shared_properties.get(entry.expiry_s)
            if shared is None:
                shared = self._build_properties(entry)
                self._shared_properties[entry.expiry_s] = shared
            return shared
        return self._build_properties(entry)

    def _build_properties(self, entry: OutboxEntry) -> Properties:
        properties = new_properties(PacketTypes.PUBLISH)
        properties.PayloadFormatIndicator = 1
        properties.ContentType = "application/json"
        if entry.expiry_s is not None:
            properties.MessageExpiryInterval = entry.expiry_s
        if entry.correlation_data is not None:
            properties.CorrelationData = entry.correlation_data
        return properties
