"""The daemon's side of the control socket: `DaemonApi` over the bridge, cloud link and store."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from cloud_link import CloudLink, SecurityEvent, SecurityEventKind
from firmware_bridge import (
    BoardOfflineError,
    BridgeError,
    SlotDriver,
    SlotSnapshot,
    UnknownSlotError,
)
from gateway import __version__
from gateway.api import (
    ApiError,
    ApiErrorCode,
    BankReading,
    BankReply,
    BoardBusInfo,
    BoardStatus,
    BusReply,
    DeadLetterInfo,
    ErrorRecord,
    EventRecord,
    HealthSample,
    MaintenanceEjectReply,
    MqttLinkStatus,
    OrderEvidence,
    OrderStep,
    OutboxLaneStatus,
    OutboxReply,
    OutboxSummary,
    SelfTestResult,
    SerialLinkStatus,
    SlotInfo,
    SlotsReply,
    StatusReply,
    StockCounts,
    SupportBundle,
    redact_secrets,
)
from gateway.commands import CommandRunner
from gateway.feed import EventFeed
from gateway.store import GatewayStore
from protocol.cabinet import EjectOutcome, LinkState, SlotState

logger = logging.getLogger(__name__)

LANE_NAMES = ("urgent", "transactional", "telemetry")


@dataclass
class ErrorLog:
    """The last errors shown by `status`, newest first."""

    capacity: int = 20

    def __post_init__(self) -> None:
        self.entries: list[ErrorRecord] = []

    def add(self, source: str, message: str) -> None:
        self.entries.insert(0, ErrorRecord(at=time.time(), source=source, message=message[:300]))
        del self.entries[self.capacity :]


class DaemonService:
    """Implements `gateway.api.DaemonApi` for the control server."""

    def __init__(
        self,
        *,
        cabinet_id: str,
        bridge: SlotDriver,
        cloud: CloudLink,
        store: GatewayStore,
        runner: CommandRunner,
        feed: EventFeed,
        errors: ErrorLog,
        config_dump: Callable[[], dict[str, Any]],
        serial_port: str,
        log_lines: Callable[[], list[str]],
    ) -> None:
        self._cabinet_id = cabinet_id
        self._bridge = bridge
        self._cloud = cloud
        self._store = store
        self._runner = runner
        self._feed = feed
        self._errors = errors
        self._config_dump = config_dump
        self._serial_port = serial_port
        self._log_lines = log_lines
        self._started = time.monotonic()
        self._busy_slots: set[int] = set()

    # Status

    async def status(self) -> StatusReply:
        snapshot = self._bridge.snapshot()
        cloud = self._cloud
        config = cloud.config
        scheme = "mqtts" if config.tls.enabled else "mqtt"
        boards = [
            BoardStatus(
                address=board.address,
                board_id=f"{board.identity.board_id:016X}" if board.identity else None,
                firmware=board.identity.firmware if board.identity else None,
                first_slot=board.first_slot,
                slot_count=board.slot_count,
                link=board.link,
                reason="" if board.link is LinkState.ONLINE else board.reason,
            )
            for board in snapshot.boards
        ]
        return StatusReply(
            cabinet_id=self._cabinet_id,
            version=__version__,
            uptime_s=time.monotonic() - self._started,
            mqtt=MqttLinkStatus(
                state=cloud.link_state,
                broker=f"{scheme}://{config.host}:{config.port}",
                connected_since=cloud.connected_since,
                last_error=self._last_error("mqtt"),
            ),
            serial=SerialLinkStatus(
                state=_serial_state(snapshot.port_open, [b.link for b in snapshot.boards]),
                port=self._serial_port,
                port_open=snapshot.port_open,
                last_error=self._last_error("serial"),
            ),
            boards=boards,
            outbox=self._outbox_summary(),
            stock=self._stock(snapshot.slots),
            last_errors=list(self._errors.entries),
        )

    def _last_error(self, source: str) -> str | None:
        for entry in self._errors.entries:
            if entry.source == source:
                return entry.message
        return None

    def _lanes(self) -> list[OutboxLaneStatus]:
        now = time.time()
        lanes = []
        for lane, depth, size, oldest in self._cloud.outbox.lane_summary():
            lanes.append(
                OutboxLaneStatus(
                    lane=LANE_NAMES[int(lane)],  # type: ignore[arg-type]
                    depth=depth,
                    bytes=size,
                    oldest_age_s=None if oldest is None else max(0.0, now - oldest),
                )
            )
        return lanes

    def _outbox_summary(self) -> OutboxSummary:
        stats = self._cloud.outbox.stats()
        return OutboxSummary(
            lanes=self._lanes(),
            dead_letters=stats.dead_letters,
            dropped_telemetry=stats.telemetry_dropped,
        )

    @staticmethod
    def _stock(slots: tuple[SlotSnapshot, ...]) -> StockCounts:
        counts = dict.fromkeys(("rentable", "charging", "empty", "faulted", "disabled"), 0)
        for slot in slots:
            if slot.disabled_reason is not None:
                counts["disabled"] += 1
            elif slot.rentable:
                counts["rentable"] += 1
            elif slot.state is SlotState.EMPTY:
                counts["empty"] += 1
            elif slot.state in (SlotState.FAULTED, SlotState.UNKNOWN):
                counts["faulted"] += 1
            else:
                counts["charging"] += 1
        return StockCounts(**counts)

    # Slots and banks

    async def slots(self) -> SlotsReply:
        return SlotsReply(slots=[_slot_info(slot) for slot in self._bridge.snapshot().slots])

    def _slot(self, number: int) -> SlotSnapshot:
        for slot in self._bridge.snapshot().slots:
            if slot.slot == number:
                return slot
        raise ApiError(ApiErrorCode.UNKNOWN_SLOT, f"slot {number} does not exist")

    async def bank(self, slot: int) -> BankReply:
        found = self._slot(slot)
        history = self._store.health_history(found.bank_id) if found.bank_id else []
        return BankReply(
            slot=found.slot,
            state=found.state,
            bank_id=found.bank_id,
            charge_pct=found.charge,
            voltage_mv=found.voltage_mv,
            current_ma=found.current_ma,
            temperature_c=found.temperature_c,
            cycles=found.cycles,
            health_pct=found.health_pct,
            faults=list(found.faults),
            retire=found.retire,
            health_history=[
                HealthSample(at=point.at, health_pct=point.health_pct, cycles=point.cycles)
                for point in history
            ],
        )

    # Bus and outbox

    async def bus(self) -> BusReply:
        stats = self._bridge.stats()
        return BusReply(
            port=self._serial_port,
            port_open=stats.port_open,
            frames_sent=stats.frames_sent,
            frames_received=stats.frames_received,
            bytes_sent=stats.bytes_sent,
            bytes_received=stats.bytes_received,
            bytes_dropped=stats.bytes_dropped,
            crc_errors=stats.crc_errors,
            timeouts=stats.timeouts,
            retries=stats.retries,
            echoes=stats.echoes,
            latency_p50_s=stats.latency_p50_s,
            latency_p99_s=stats.latency_p99_s,
            reopens=stats.reopens,
            boards=[
                BoardBusInfo(
                    address=board.address,
                    requests=board.requests,
                    replies=board.replies,
                    timeouts=board.timeouts,
                    retries=board.retries,
                    errors=board.errors,
                    latency_p50_s=board.latency_p50_s,
                    latency_p99_s=board.latency_p99_s,
                )
                for board in stats.boards
            ],
        )

    async def outbox(self) -> OutboxReply:
        outbox = self._cloud.outbox
        stats = outbox.stats()
        return OutboxReply(
            lanes=self._lanes(),
            dropped_telemetry=stats.telemetry_dropped,
            dead_letter_count=stats.dead_letters,
            dead_letters=[
                DeadLetterInfo(
                    seq=letter.seq,
                    topic=letter.topic,
                    size=letter.size,
                    reason=letter.reason,
                    reason_code=letter.reason_code,
                    failed_at=letter.failed_at,
                )
                for letter in outbox.dead_letters(100)
            ],
        )

    def events(self, follow: bool, limit: int) -> AsyncGenerator[EventRecord, None]:
        return self._feed.stream(follow, limit)

    # Actions

    async def selftest(self, slot: int) -> SelfTestResult:
        self._slot(slot)
        async with self._exclusive(slot):
            report = await self._call(self._bridge.self_test(slot))
        self._feed.add(
            "selftest",
            "passed" if report.passed else "failed: " + ", ".join(report.failed_checks),
            at=report.at,
            slot=slot,
        )
        return SelfTestResult(
            slot=slot, passed=report.passed, failed_checks=list(report.failed_checks), at=report.at
        )

    async def slot_disable(self, slot: int, reason: str) -> SlotInfo:
        self._slot(slot)
        await self._call(self._bridge.set_slot_disabled(slot, True, reason))
        logger.info("slot %d disabled from the control socket: %s", slot, reason)
        return _slot_info(self._slot(slot))

    async def slot_enable(self, slot: int) -> SlotInfo:
        self._slot(slot)
        await self._call(self._bridge.set_slot_disabled(slot, False, "enabled by technician"))
        logger.info("slot %d enabled from the control socket", slot)
        return _slot_info(self._slot(slot))

    async def maintenance_eject(
        self, slot: int, reason: str, technician: str
    ) -> MaintenanceEjectReply:
        self._slot(slot)
        detail = f"maintenance eject of slot {slot} by {technician}: {reason}"[:200]
        audit_seq = self._cloud.send(
            SecurityEvent(event=SecurityEventKind.MAINTENANCE_EJECT, slot=slot, detail=detail)
        )
        logger.warning("%s (audit seq %d)", detail, audit_seq)
        token = secrets.randbits(32) or 1
        if not self._runner.accepting:
            raise ApiError(ApiErrorCode.UNAVAILABLE, "the gateway is stopping; try again later")
        async with self._exclusive(slot), self._runner.running():
            result = await self._call(self._bridge.eject(slot, token, maintenance=True))
        return MaintenanceEjectReply(
            slot=slot,
            outcome=result.outcome,
            fail_reason=result.fail_reason,
            reject_reason=result.reject_reason,
            bank_id=result.bank_id,
            audit_seq=audit_seq,
            detail=result.detail,
        )

    async def order(self, order_id: str) -> OrderEvidence:
        row = self._store.find_order(order_id)
        if row is None:
            raise ApiError(ApiErrorCode.NOT_FOUND, f"no rent or return with id {order_id!r}")
        return OrderEvidence(
            order_id=row.order_id,
            kind="return" if row.kind == "return" else "rent",
            slot=row.slot,
            bank_id=row.bank_id,
            outcome=EjectOutcome(row.outcome) if row.outcome else None,
            fail_reason=row.fail_reason,  # type: ignore[arg-type]
            reject_reason=row.reject_reason,  # type: ignore[arg-type]
            identified=row.identified,
            bank_at_eject=BankReading(**row.bank_at_eject) if row.bank_at_eject else None,
            bank_at_return=BankReading(**row.bank_at_return) if row.bank_at_return else None,
            steps=[OrderStep(at=at, step=step, detail=detail) for at, step, detail in row.steps],
        )

    async def bundle(self) -> SupportBundle:
        return SupportBundle(
            created_at=time.time(),
            cabinet_id=self._cabinet_id,
            version=__version__,
            config=redact_secrets(self._config_dump()),
            status=await self.status(),
            recent_events=self._feed.recent(200),
            log_lines=self._log_lines()[-300:],
        )

    # Helpers

    def _exclusive(self, slot: int) -> _SlotGuard:
        return _SlotGuard(self._busy_slots, slot)

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except UnknownSlotError as exc:
            raise ApiError(ApiErrorCode.UNKNOWN_SLOT, str(exc)) from exc
        except BoardOfflineError as exc:
            raise ApiError(ApiErrorCode.BOARD_OFFLINE, str(exc)) from exc
        except BridgeError as exc:
            raise ApiError(ApiErrorCode.INTERNAL, str(exc)) from exc


class _SlotGuard:
    """Refuses a second technician action on a slot while one is running."""

    def __init__(self, busy: set[int], slot: int) -> None:
        self._busy = busy
        self._slot = slot

    async def __aenter__(self) -> None:
        if self._slot in self._busy:
            raise ApiError(ApiErrorCode.SLOT_BUSY, f"slot {self._slot} is busy with another action")
        self._busy.add(self._slot)

    async def __aexit__(self, *exc_info: object) -> None:
        self._busy.discard(self._slot)


def _serial_state(port_open: bool, links: list[LinkState]) -> LinkState:
    if not port_open:
        return LinkState.OFFLINE
    if all(link is LinkState.ONLINE for link in links):
        return LinkState.ONLINE
    return LinkState.DEGRADED


def _slot_info(slot: SlotSnapshot) -> SlotInfo:
    return SlotInfo(
        slot=slot.slot,
        board=slot.board,
        state=slot.state,
        bank_id=slot.bank_id,
        charge_pct=slot.charge,
        temperature_c=slot.temperature_c,
        voltage_mv=slot.voltage_mv,
        health_pct=slot.health_pct,
        cycles=slot.cycles,
        faults=list(slot.faults),
        disabled_reason=slot.disabled_reason,
        rentable=slot.rentable,
        retire=slot.retire,
    )
