"""The daemon: owns the bridge, the cloud link, the control socket and their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from typing import IO, Any

from cloud_link import (
    Birth,
    BoardSnapshot,
    CloudConfigError,
    CloudLink,
    LowStockEvent,
    OutboxFullError,
    OutgoingData,
    PendingCommand,
    SlotSnapshot,
    StockReport,
)
from cloud_link.clock import SystemClock as CloudClock
from firmware_bridge import (
    BankHealthReport,
    BankRemoved,
    BankReturned,
    BoardEventKey,
    BoardLinkChanged,
    CabinetEvent,
    EjectFinished,
    FaultRaised,
    LateEjectOutcome,
    SlotDriver,
    SlotStateChanged,
    StockChanged,
    create_bridge,
)
from gateway import __version__
from gateway.commands import CommandRunner
from gateway.config import GatewayConfig
from gateway.control import ControlServer
from gateway.feed import EventFeed
from gateway.logs import RecentLines
from gateway.service import DaemonService, ErrorLog
from gateway.store import GatewayStore, HealthPoint
from gateway.systemd import Notifier
from gateway.translate import EjectContext, summary_of, to_cloud
from protocol.cabinet import FaultKind, SlotState

logger = logging.getLogger(__name__)

BRIDGE_READY_TIMEOUT_S = 30.0
OCCUPANCY_EVENTS = (SlotStateChanged, BankReturned, BankRemoved, EjectFinished, LateEjectOutcome)

FAULT_OF_FLAG = {
    "LOCK_STUCK": FaultKind.LOCK_FAULT,
    "LOCK_NOT_RETURNED": FaultKind.LOCK_NOT_RETURNED,
    "TAMPER": FaultKind.TAMPER,
    "OVERHEAT": FaultKind.OVERHEAT,
    "ID_READ": FaultKind.ID_READ_FAILED,
}


class InstanceLockedError(Exception):
    """Another daemon already runs for the same state directory."""


class ErrorCapture(logging.Handler):
    """Copies warnings and errors of the two sides into the `status` error list."""

    SOURCES = (("cloud_link", "mqtt"), ("firmware_bridge", "serial"))

    def __init__(self, errors: ErrorLog) -> None:
        super().__init__(logging.WARNING)
        self._errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        for prefix, source in self.SOURCES:
            if record.name.startswith(prefix):
                try:
                    self._errors.add(source, record.getMessage())
                except Exception:
                    self.handleError(record)
                return


class Daemon:
    """One cabinet's gateway. `run()` returns after `stop()` or, by default, SIGTERM/SIGINT."""

    def __init__(self, config: GatewayConfig, *, recent_logs: RecentLines | None = None) -> None:
        self.config = config
        self._recent_logs = recent_logs
        self._lock_file: IO[str] | None = None
        self.store = GatewayStore(config.database_path)
        self.feed = EventFeed()
        self.errors = ErrorLog()
        self._cloud_clock = CloudClock.from_settings(config.mqtt.commands)
        self.bridge: SlotDriver = create_bridge(config.serial, sink=self, store=self.store)
        self.ready = asyncio.Event()
        self.runner = CommandRunner(
            self.bridge,
            self.store,
            wall_synchronised=self._cloud_clock.wall_synchronised,
            ready=self.ready,
        )
        self.cloud = CloudLink(
            config.mqtt,
            database=config.database_path,
            handler=self.runner.handle,
            notice=self.runner,
            birth_provider=self._birth,
        )
        self.service = DaemonService(
            cabinet_id=config.cabinet.id,
            bridge=self.bridge,
            cloud=self.cloud,
            store=self.store,
            runner=self.runner,
            feed=self.feed,
            errors=self.errors,
            config_dump=lambda: config.model_dump(mode="json"),
            serial_port=config.serial.port,
            log_lines=lambda: list(recent_logs.lines) if recent_logs else [],
        )
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._low_stock = False
        self._low_free = False
        self._health_reported: dict[str, float] = {}
        self._capture = ErrorCapture(self.errors)

    # Lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until stopped. With `handle_signals`, SIGTERM and SIGINT call `stop()`.

        A caller that runs more than the daemon in its event loop passes False and calls
        `stop()` itself, because the loop keeps one handler per signal and this method removes
        its handlers when it returns.
        """
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        self._acquire_lock()
        logging.getLogger().addHandler(self._capture)
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, self.stop)
        control = ControlServer(self.service, self.config.control.socket, self.config.control.group)
        try:
            await control.start()
            await self._run_tasks()
        except* CloudConfigError as group:
            # The caller reports one fatal configuration error, not the task group around it.
            raise group.exceptions[0] from None
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await control.close()
            logging.getLogger().removeHandler(self._capture)
            self.cloud.close()
            self.store.close()
            self._release_lock()
            logger.info("gateway for cabinet %s stopped", self.config.cabinet.id)

    async def _run_tasks(self) -> None:
        # Taken before the cloud link connects: a command that arrives during start-up is
        # running in this process and must not be mistaken for one cut off by the restart.
        leftover = self.cloud.pending_commands()
        async with asyncio.TaskGroup() as tasks:
            bridge_task = tasks.create_task(self.bridge.run(), name="bridge")
            cloud_task = tasks.create_task(self.cloud.run(), name="cloud")
            watchdog = tasks.create_task(self.notifier.watchdog_loop(), name="watchdog")
            startup = tasks.create_task(self._start_up(leftover), name="startup")
            await self._stop.wait()
            await self._shut_down(startup, cloud_task)
            for task in (bridge_task, watchdog, startup):
                task.cancel()

    async def _start_up(self, leftover: list[PendingCommand]) -> None:
        """Wait for the boards, finish commands cut off by a restart, then report ready."""
        try:
            await self.bridge.wait_ready(BRIDGE_READY_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "boards not all read after %.0f s; starting anyway", BRIDGE_READY_TIMEOUT_S
            )
        for pending in leftover:
            outcome = await self.runner.resolve_pending(pending)
            command = pending.body.command.type if pending.body else "unknown"
            self.cloud.complete_command(pending.command_id, command, outcome)
            logger.info(
                "command %s from before the restart finished: %s",
                pending.command_id,
                outcome.status,
            )
        self.ready.set()
        self.notifier.ready(f"cabinet {self.config.cabinet.id} running")
        logger.info(
            "gateway %s for cabinet %s ready (serial %s, broker %s:%d)",
            __version__,
            self.config.cabinet.id,
            self.config.serial.port,
            self.config.mqtt.host,
            self.config.mqtt.port,
        )

    async def _shut_down(self, startup: asyncio.Task[None], cloud_task: asyncio.Task[None]) -> None:
        """Let a running eject finish, flush the outbox for a bounded time, and stop the link."""
        logger.info("stopping: no new commands; waiting for running ejects")
        self.notifier.stopping()
        self.runner.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.runner.idle.wait(), self.config.cabinet.shutdown_eject_wait_s
            )
        if self.runner.running_ejects:
            logger.warning(
                "%d ejects still running at shutdown; they are resolved after the restart",
                self.runner.running_ejects,
            )
        self.cloud.stop()
        await cloud_task

    def _acquire_lock(self) -> None:
        path: Path = self.config.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise InstanceLockedError(
                f"another gateway (pid {owner}) is running with state directory "
                f"{path.parent}; stop it first or use another cabinet.state_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # Bridge events (EventSink)

    async def handle(self, event: CabinetEvent) -> None:
        """Commit the cloud messages of one bridge event; the bridge acknowledges it after this.

        Raises OutboxFullError when a transactional message cannot be stored, so that the board
        keeps the event and the bridge hands it over again later.
        """
        context = self._context_of(event)
        messages = [] if self._health_too_soon(event) else to_cloud(event, context)
        key = getattr(event, "key", None)
        seqs = [
            self._send(message, _dedupe_key(key, index, message) if key else None)
            for index, message in enumerate(messages)
        ]
        self._record(event, seqs)
        if isinstance(event, OCCUPANCY_EVENTS):
            # Saved before the bridge stores its watermark, so a restart finds it current.
            self.store.save_occupancy(self.bridge.occupancy())
        kind, summary, slot = summary_of(event)
        self.feed.add(kind, summary, at=event.at, slot=slot, data=_event_data(event))
        if isinstance(event, StockChanged):
            self._stock_changed(event)

    def _health_too_soon(self, event: CabinetEvent) -> bool:
        """Limit battery-health telemetry to one report per bank per configured interval.

        A bank flagged for retirement is always reported; the history is stored either way.
        """
        if not isinstance(event, BankHealthReport) or event.retire:
            return False
        now = time.monotonic()
        last = self._health_reported.get(event.bank_id)
        if last is not None and now - last < self.config.cabinet.battery_report_interval_s:
            return True
        self._health_reported[event.bank_id] = now
        return False

    def _context_of(self, event: CabinetEvent) -> EjectContext | None:
        if isinstance(event, EjectFinished | LateEjectOutcome):
            return self.runner.contexts.get(event.result.token)
        return None

    def _send(self, message: OutgoingData, dedupe_key: str | None = None) -> int | None:
        try:
            return self.cloud.send(message, dedupe_key=dedupe_key)
        except OutboxFullError:
            logger.error("outbox full: %s not stored; the board keeps the event", message.kind)
            raise

    def _record(self, event: CabinetEvent, seqs: list[int | None]) -> None:
        if isinstance(event, BankReturned):
            order_id = f"R{seqs[0]}" if seqs and seqs[0] else f"R{int(event.at * 1000)}"
            self.store.open_order(order_id, "return", command_id=None, slot=event.slot, at=event.at)
            reading: dict[str, Any] = {"at": event.at, "bank_id": event.bank_id}
            if event.bank is not None:
                reading |= {
                    "charge_pct": event.bank.charge,
                    "temperature_c": event.bank.temperature_c,
                    "voltage_mv": event.bank.voltage_mv,
                    "health_pct": event.bank.health_pct,
                    "cycles": event.bank.cycles,
                }
            self.store.update_order(
                order_id,
                bank_id=event.bank_id,
                identified=event.identified,
                bank_at_return=reading,
            )
            self.store.add_order_step(order_id, event.at, "returned", f"outbox seq {seqs[0]}")
            logger.info(
                "return in slot %d: bank %s (order %s)", event.slot, event.bank_id, order_id
            )
        elif isinstance(event, EjectFinished | LateEjectOutcome):
            context = self.runner.contexts.get(event.result.token)
            if context is not None and context.order_id and isinstance(event, LateEjectOutcome):
                self.runner.record_eject(context.order_id, event.result)
        elif isinstance(event, BankHealthReport):
            self.store.add_health_point(
                event.bank_id, HealthPoint(event.at, event.health_pct, event.cycles)
            )
        elif isinstance(event, FaultRaised) and event.kind is not FaultKind.BOARD_RESET:
            self.errors.add(f"slot {event.slot}" if event.slot else "cabinet", event.detail)
        elif isinstance(event, BoardLinkChanged):
            self.errors.add(f"board {event.board}", f"{event.state}: {event.reason}")

    def _stock_changed(self, event: StockChanged) -> None:
        cabinet = self.config.cabinet
        self._send(
            StockReport(
                rentable=event.rentable,
                charging=event.charging,
                empty=event.empty,
                faulted=event.faulted,
            )
        )
        low = event.rentable < cabinet.low_stock_threshold
        if low and not self._low_stock:
            self._send(
                LowStockEvent(
                    reason="rentable",
                    rentable_count=event.rentable,
                    free_slots=event.empty,
                    threshold=cabinet.low_stock_threshold,
                )
            )
        self._low_stock = low
        low_free = event.empty < cabinet.min_free_slots
        if low_free and not self._low_free:
            self._send(
                LowStockEvent(
                    reason="free_slots",
                    rentable_count=event.rentable,
                    free_slots=event.empty,
                    threshold=cabinet.min_free_slots,
                )
            )
        self._low_free = low_free

    # Birth

    def _birth(self) -> Birth:
        snapshot = self.bridge.snapshot()
        stock = snapshot.stock
        return Birth(
            gateway_version=__version__,
            slot_count=len(snapshot.slots),
            rentable_count=stock.rentable,
            charging_count=stock.charging,
            empty_count=stock.empty,
            faulted_count=stock.faulted,
            min_rentable_soc_percent=self.config.serial.rentable_min_charge,
            clock_synchronised=self._cloud_clock.wall_synchronised(),
            boards=tuple(
                BoardSnapshot(
                    address=board.address,
                    online=board.link.value != "offline",
                    firmware=board.identity.firmware if board.identity else None,
                    first_slot=board.first_slot,
                    slot_count=board.slot_count,
                )
                for board in snapshot.boards
            ),
            slots=tuple(
                SlotSnapshot(
                    slot=slot.slot,
                    state=slot.state,
                    bank_id=slot.bank_id,
                    soc_percent=slot.charge,
                    disabled=slot.disabled_reason is not None,
                    fault=_main_fault(slot.faults, slot.state),
                )
                for slot in snapshot.slots
            ),
        )


def _dedupe_key(key: BoardEventKey, index: int, message: OutgoingData) -> str:
    """Name a cloud message by the board event it came from.

    The board keeps an event until the bridge acknowledges it, so a daemon killed between the
    outbox commit and the acknowledgement reads the event again after the restart. The key
    makes the outbox return the first sequence number instead of storing the message twice.
    """
    return f"{key.board_id:016X}/{key.boot_count}/{key.event_id}/{index}/{message.kind}"


def _main_fault(faults: tuple[str, ...], state: SlotState) -> FaultKind | None:
    for name in faults:
        if name in FAULT_OF_FLAG:
            return FAULT_OF_FLAG[name]
    return None


def _event_data(event: CabinetEvent) -> dict[str, Any]:
    fields = getattr(event, "__dataclass_fields__", {})
    data: dict[str, Any] = {}
    for name in fields:
        value = getattr(event, name)
        if name == "result":
            data |= {f"eject_{key}": getattr(value, key) for key in value.__dataclass_fields__}
        elif name not in ("bank", "key"):
            data[name] = value
    return data
