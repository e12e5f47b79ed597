"""Two consumers in one `$share` group handle every event exactly once after deduplication."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import aiomqtt

from cloud_link import EjectOutcomeEvent, EjectReport, ReturnEvent
from cloud_link.backend_example import EventHandler, MemorySeenStore, consume_events
from cloud_link.messages import AnyEnvelope
from protocol.cabinet import EjectOutcome
from tests.cloud_link.conftest import WAIT_S, LinkFactory, observe, payload_bytes, running
from tests.support.mosquitto import MosquittoBroker

EVENTS = 60


class CountingSeenStore(MemorySeenStore):
    """Counts deliveries, so the test can wait until every copy reached a consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries = 0
        self.changed = asyncio.Event()

    def first_time(self, cabinet_id: str, seq: int) -> bool:
        self.deliveries += 1
        self.changed.set()
        return super().first_time(cabinet_id, seq)

    async def wait_deliveries(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.deliveries < count:
                self.changed.clear()
                await self.changed.wait()


async def test_shared_group_processes_each_event_once(
    mosquitto: MosquittoBroker, make_link: LinkFactory
) -> None:
    seen = CountingSeenStore()
    handled: dict[str, list[int]] = {"a": [], "b": []}
    wanted: set[int] = set()

    def handler_for(name: str) -> EventHandler:
        async def handle(envelope: AnyEnvelope) -> None:
            handled[name].append(envelope.seq)

        return handle

    link = make_link()
    async with contextlib.AsyncExitStack() as stack:
        tasks = []
        for name in handled:
            client = await stack.enter_async_context(
                aiomqtt.Client(
                    mosquitto.host,
                    mosquitto.port,
                    identifier=f"backend-{name}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                )
            )
            tasks.append(
                asyncio.create_task(
                    consume_events(
                        client,
                        group="billing",
                        prefix="cabinets",
                        seen=seen,
                        handle=handler_for(name),
                    )
                )
            )
        observer = await stack.enter_async_context(observe(mosquitto))
        await stack.enter_async_context(running(link))
        await link.wait_connected()
        for index in range(EVENTS):
            report = EjectReport(outcome=EjectOutcome.TAKEN, slot=index % 8 + 1)
            wanted.add(link.send(EjectOutcomeEvent(command_id=f"c-{index}", report=report)))
        wanted.add(link.send(ReturnEvent(slot=2, recognised=False)))

        # Redeliver every message once more, as the outbox does after a lost PUBACK.
        copies = 0
        while copies < len(wanted):
            message = await observer.next_on("")
            if "/event/" in message.topic.value:
                await observer.publish(message.topic.value, payload_bytes(message))
                copies += 1
        await seen.wait_deliveries(2 * len(wanted))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    counts = Counter(handled["a"] + handled["b"])
    assert set(counts) == wanted
    assert max(counts.values()) == 1
    assert handled["a"]
    assert handled["b"]
