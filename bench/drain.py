"""drain: publish 100,000 buffered events from the outbox to a local Mosquitto at QoS 1.

The gateway side is a `CloudLink` started on an outbox that already contains the events. The
clock runs from `run()` until the outbox is empty, so every event was acknowledged with a
PUBACK and deleted. The baseline is a raw paho-mqtt client publishing the same payloads on
the same topic at QoS 1 with the same in-flight window, from connect to the last PUBACK.
One subscriber counts every delivered message for both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

from bench.broker import Broker, mosquitto
from bench.result import BenchResult, safe_ratio
from cloud_link import Birth, CloudConfig, CloudLink, CommandOutcome, ReturnEvent, TlsConfig
from cloud_link.clock import SystemClock
from cloud_link.commands import AcceptedCommand
from cloud_link.config import OutboxLimits
from cloud_link.mqtt_client import new_properties
from cloud_link.outbox import Outbox
from cloud_link.session import DATABASE_NAME
from cloud_link.storage import Storage
from cloud_link.topics import Topics

TARGET_RATIO = 0.8
FULL_EVENTS = 100_000
QUICK_EVENTS = 10_000
IN_FLIGHT = 8
CABINET = "BENCH-0001"
PROGRESS_CHECK_S = 0.05
DRAIN_TIMEOUT_S = 300.0
DELIVERY_TIMEOUT_S = 60.0
RAW_QUEUE_LIMIT = 1000
OUTBOX_BYTES = 256 << 20


def event(number: int) -> ReturnEvent:
    return ReturnEvent(
        slot=1 + number % 24, bank_id=f"{number:016X}", recognised=True, soc_percent=number % 101
    )


def fill_outbox(state_dir: Path, config: CloudConfig, count: int) -> None:
    """Queue `count` return events as an offline gateway would, in one commit for speed."""
    storage = Storage(state_dir / DATABASE_NAME)
    outbox = Outbox(storage, cabinet_id=CABINET, limits=config.outbox, clock=SystemClock())
    topic = Topics(config.topic_prefix, CABINET).event("bank_returned")
    with storage.transaction(durable=True):
        for number in range(count):
            outbox.enqueue(event(number), topic=topic, offline=True)
    storage.close()


class Counter:
    """A subscriber that counts the messages on one topic filter, in paho's thread."""

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.count = 0
        self._target = 0
        self._reached = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        # QoS 1, so that the broker queues for a slow subscriber instead of dropping.
        self._client.subscribe(topic_filter, qos=1)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self._target and self.count >= self._target:
            self._reached.set()

    def expect(self, count: int) -> None:
        self.count = 0
        self._target = count
        self._reached.clear()

    def wait(self, timeout_s: float) -> bool:
        return self._reached.wait(timeout_s)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def cloud_config(broker: Broker) -> CloudConfig:
    return CloudConfig(
        cabinet_id=CABINET,
        host=broker.host,
        port=broker.port,
        tls=TlsConfig(enabled=False),
        heartbeat_interval_s=3600.0,
        outbox=OutboxLimits(max_bytes=OUTBOX_BYTES, max_in_flight=IN_FLIGHT),
    )


def birth() -> Birth:
    return Birth(
        gateway_version="bench",
        slot_count=24,
        rentable_count=0,
        charging_count=0,
        empty_count=24,
        faulted_count=0,
        min_rentable_soc_percent=80,
        clock_synchronised=True,
    )


async def no_commands(command: AcceptedCommand) -> CommandOutcome:
    raise RuntimeError("the drain benchmark sends no commands")


async def drain_gateway(config: CloudConfig, state_dir: Path) -> float:
    """Run a CloudLink until its outbox is empty; return the seconds from start."""
    cloud = CloudLink(
        config, database=state_dir / DATABASE_NAME, handler=no_commands, birth_provider=birth
    )
    started = time.perf_counter()
    task = asyncio.create_task(cloud.run(), name="bench-drain-cloud")
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            # The outbox signals nothing when it becomes empty, so it is counted every 50 ms.
            while cloud.outbox.stats().pending > 0:
                if task.done():
                    task.result()
                await asyncio.sleep(PROGRESS_CHECK_S)
        elapsed = time.perf_counter() - started
    finally:
        cloud.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, config.shutdown_flush_s + 5.0)
        cloud.close()
    return elapsed


def drain_raw(broker: Broker, topic: str, payloads: list[bytes]) -> float:
    """Publish `payloads` with plain paho at QoS 1; return the seconds to the last PUBACK."""
    acked = threading.Event()
    pending = {"count": len(payloads)}
    # paho-mqtt 2.2 numbers a message when it is queued and keys its queue by that number, so
    # more than 65,535 queued messages overwrite each other. The in-flight window stays at 8.
    queue_room = threading.Semaphore(RAW_QUEUE_LIMIT)

    def on_publish(client: mqtt.Client, userdata: object, mid: int, *args: object) -> None:
        queue_room.release()
        pending["count"] -= 1
        if pending["count"] == 0:
            acked.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(IN_FLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    properties = new_properties(PacketTypes.PUBLISH)
    properties.PayloadFormatIndicator = 1
    properties.ContentType = "application/json"

    started = time.perf_counter()
    client.connect(broker.host, broker.port)
    client.loop_start()
    for payload in payloads:
        if not queue_room.acquire(timeout=DRAIN_TIMEOUT_S):
            break
        client.publish(topic, payload, qos=1, properties=properties)
    finished = acked.wait(DRAIN_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise TimeoutError(
            f"raw publisher: {pending['count']} PUBACKs missing after {DRAIN_TIMEOUT_S} s"
        )
    return elapsed


def progress(step: str) -> None:
    print(f"drain: {step}", file=sys.stderr, flush=True)


def run(quick: bool) -> tuple[BenchResult, list[str]]:
    count = QUICK_EVENTS if quick else FULL_EVENTS
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as workdir:
        work = Path(workdir)
        with mosquitto(work / "broker") as broker:
            config = cloud_config(broker)
            topic = Topics(config.topic_prefix, CABINET).event("bank_returned")
            counter = Counter(broker, topic)
            try:
                progress(f"filling the outbox with {count} events")
                fill_outbox(work / "state", config, count)
                storage = Storage(work / "state" / DATABASE_NAME)
                payloads = [bytes(row[0]) for row in storage.query("SELECT payload FROM outbox")]
                storage.close()

                counter.expect(count)
                progress("draining through CloudLink")
                gateway_s = asyncio.run(drain_gateway(config, work / "state"))
                gateway_delivered = counter.wait(DELIVERY_TIMEOUT_S)
                gateway_count = counter.count

                counter.expect(count)
                progress(f"{gateway_count} delivered; publishing with raw paho")
                raw_s = drain_raw(broker, topic, payloads)
                counter.wait(DELIVERY_TIMEOUT_S)
                raw_count = counter.count
            finally:
                counter.close()

    gateway_rate = count / gateway_s
    raw_rate = count / raw_s
    ratio = safe_ratio(gateway_rate, raw_rate)
    summary = [
        f"drain: {count} events of about {len(payloads[0])} bytes, QoS 1, "
        f"in-flight window {IN_FLIGHT}, Mosquitto on 127.0.0.1",
        f"  CloudLink: {gateway_s:.2f} s, {gateway_rate:.0f} messages/s, "
        f"{gateway_count} delivered to the subscriber",
        f"  raw paho:  {raw_s:.2f} s, {raw_rate:.0f} messages/s, "
        f"{raw_count} delivered to the subscriber",
    ]
    met = ratio >= TARGET_RATIO and gateway_delivered and gateway_count >= count
    result = BenchResult(
        name="drain",
        value=gateway_rate,
        unit="messages/s",
        baseline=raw_rate,
        ratio=ratio,
        target=f"ratio >= {TARGET_RATIO}, every event delivered",
        met=met,
    )
    return result, summary
