"""Example backend consumer: several instances share one `$share` group and deduplicate.

A backend scales out by running several consumers in one shared subscription group; the
broker gives each message to one of them. The outbox publishes at least once, so a message
can arrive twice (a lost PUBACK, a restart between publish and delete), possibly at two
different consumers. Deduplicating by (cabinet id, sequence number) in storage shared by
all consumers turns that into exactly-once processing. In production the shared store is a
database table with a unique key on (cabinet_id, seq); here `MemorySeenStore` replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiomqtt
from pydantic import ValidationError

from cloud_link.messages import AnyEnvelope, parse_message

logger = logging.getLogger(__name__)

EventHandler = Callable[[AnyEnvelope], Awaitable[None]]


class SeenStore(Protocol):
    def first_time(self, cabinet_id: str, seq: int) -> bool:
        """Record (cabinet_id, seq) and return whether it was new, atomically."""
        ...


class MemorySeenStore:
    """Process-local stand-in for a database table with a unique (cabinet_id, seq) key."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, int]] = set()

    def first_time(self, cabinet_id: str, seq: int) -> bool:
        key = (cabinet_id, seq)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def shared_event_filter(group: str, prefix: str) -> str:
    """Return the shared-subscription filter for every cabinet's events."""
    return f"$share/{group}/{prefix}/+/event/#"


async def consume_events(
    client: aiomqtt.Client,
    *,
    group: str,
    prefix: str,
    seen: SeenStore,
    handle: EventHandler,
) -> None:
    """Subscribe `client` to the shared group and pass each new event to `handle` once.

    Runs until cancelled. Payloads that do not parse are logged and skipped.
    """
    await client.subscribe(shared_event_filter(group, prefix), qos=1)
    async for message in client.messages:
        try:
            envelope = parse_message(message.payload)
        except ValidationError as exc:
            logger.warning("skipped invalid payload on %s: %s", message.topic, exc)
            continue
        if seen.first_time(envelope.cabinet_id, envelope.seq):
            await handle(envelope)
