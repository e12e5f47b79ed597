"""Executes verified cloud commands on the bridge, and finishes commands cut off by a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from cloud_link import (
    AcceptedCommand,
    CommandOutcome,
    EjectCommand,
    LockCommand,
    PendingCommand,
    SelftestCommand,
    SlotDisableCommand,
    SlotEnableCommand,
)
from cloud_link.messages import CommandStatus
from firmware_bridge import BridgeError, EjectResult, SlotDriver
from gateway.store import GatewayStore
from gateway.translate import EjectContext, eject_report
from protocol.cabinet import EjectOutcome

logger = logging.getLogger(__name__)

STATUS_OF_OUTCOME = {
    EjectOutcome.TAKEN: CommandStatus.SUCCEEDED,
    EjectOutcome.NOT_TAKEN: CommandStatus.FAILED,
    EjectOutcome.FAILED: CommandStatus.FAILED,
    EjectOutcome.REJECTED: CommandStatus.REJECTED,
}


def outcome_of_eject(result: EjectResult) -> CommandOutcome:
    detail = result.detail or None
    if result.uncertain:
        detail = (detail + "; " if detail else "") + "the lock may have opened (uncertain)"
    return CommandOutcome(
        status=STATUS_OF_OUTCOME[result.outcome],
        detail=detail[:300] if detail else None,
        eject=eject_report(result),
    )


class CommandRunner:
    """The cloud link's command handler.

    `contexts` maps the unlock token of each running eject to its command, so that the bridge's
    eject events can be published with the command and order ids.
    """

    def __init__(
        self,
        bridge: SlotDriver,
        store: GatewayStore,
        *,
        wall: Callable[[], float] = time.time,
        wall_synchronised: Callable[[], bool] = lambda: False,
        ready: asyncio.Event | None = None,
    ) -> None:
        self._bridge = bridge
        self._store = store
        self._wall = wall
        self._wall_synchronised = wall_synchronised
        self._ready = ready
        self.contexts: dict[int, EjectContext] = {}
        self.accepting = True
        self.running_ejects = 0
        self.idle = asyncio.Event()  # set while no eject runs
        self.idle.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Count one eject as running, so that a graceful stop waits for it."""
        self.running_ejects += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.running_ejects -= 1
            if not self.running_ejects:
                self.idle.set()

    def expect_eject(self) -> None:
        """Get the bus ready for an eject whose command is still being checked and stored."""
        if self.accepting:
            self._bridge.expect_eject()

    def drop_expected_eject(self) -> None:
        """Give the bus back to the polls: the command announced is no new eject."""
        self._bridge.drop_expected_eject()

    async def handle(self, accepted: AcceptedCommand) -> CommandOutcome:
        if not self.accepting:
            return CommandOutcome(CommandStatus.REJECTED, detail="the gateway is shutting down")
        await self._wait_ready(accepted.deadline_monotonic)
        command = accepted.command
        if isinstance(command, EjectCommand):
            return await self._eject(accepted, command)
        try:
            return await self._maintenance(command)
        except BridgeError as exc:
            logger.warning("command %s (%s) failed: %s", accepted.command_id, command.type, exc)
            return CommandOutcome(CommandStatus.FAILED, detail=str(exc)[:300])

    async def _wait_ready(self, deadline: float) -> None:
        """Hold a command that arrived during start-up until the boards were read.

        A command queued by the broker while the gateway was down arrives right after the
        connect, before the boards replied, so it waits, at most until its deadline.
        """
        if self._ready is None or self._ready.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - time.monotonic()))

    async def _maintenance(
        self, command: SlotDisableCommand | SlotEnableCommand | LockCommand | SelftestCommand
    ) -> CommandOutcome:
        bridge = self._bridge
        if isinstance(command, SlotDisableCommand):
            await bridge.set_slot_disabled(
                command.slot, True, command.reason or "disabled by cloud"
            )
            return CommandOutcome(CommandStatus.SUCCEEDED)
        if isinstance(command, SlotEnableCommand):
            await bridge.set_slot_disabled(command.slot, False, "enabled by cloud")
            return CommandOutcome(CommandStatus.SUCCEEDED)
        if isinstance(command, LockCommand):
            slots = [command.slot] if command.slot else [s.slot for s in bridge.snapshot().slots]
            for slot in slots:
                await bridge.lock(slot)
            return CommandOutcome(CommandStatus.SUCCEEDED)
        failed = []
        for number in [s.slot for s in bridge.snapshot().slots]:
            report = await bridge.self_test(number)
            if not report.passed:
                failed.append(f"{number}:{'+'.join(report.failed_checks)}")
        if failed:
            return CommandOutcome(CommandStatus.FAILED, detail=("failed " + " ".join(failed))[:300])
        return CommandOutcome(CommandStatus.SUCCEEDED)

    async def _eject(self, accepted: AcceptedCommand, command: EjectCommand) -> CommandOutcome:
        order_id = command.order_id or accepted.command_id
        token = accepted.unlock_token
        self.contexts[token] = EjectContext(accepted.command_id, order_id)
        received_at = self._wall()
        opened = False

        def open_order() -> None:
            nonlocal opened
            if opened:
                return
            opened = True
            try:
                self._store.open_order(
                    order_id,
                    "rent",
                    command_id=accepted.command_id,
                    slot=command.slot,
                    at=received_at,
                    step=("received", accepted.command_id),
                )
            except Exception:
                # The eject goes on: the user paid, and the command store guards it.
                logger.exception("could not open order %s", order_id)
            logger.info(
                "eject command %s order %s slot %s token %08x",
                accepted.command_id,
                order_id,
                command.slot or "best",
                token,
            )

        # The order row is a record for people, not a guard (see `open_order`), so it is
        # written once the eject has had its first turn: on a free bus the UNLOCK is already
        # on the line by then. It is written before the result at the latest.
        asyncio.get_running_loop().call_soon(open_order)
        try:
            async with self.running():
                result = await self._bridge.eject(
                    command.slot, token, deadline=accepted.deadline_monotonic
                )
        finally:
            open_order()
        self.record_eject(order_id, result)
        return outcome_of_eject(result)

    def record_eject(self, order_id: str, result: EjectResult) -> None:
        reading = None
        if result.bank_id is not None or result.charge is not None:
            reading = {
                "at": result.finished_at or self._wall(),
                "bank_id": result.bank_id,
                "charge_pct": result.charge,
                "temperature_c": result.temperature_c,
            }
        self._store.update_order(
            order_id,
            slot=result.slot,
            bank_id=result.bank_id,
            outcome=result.outcome.value,
            fail_reason=result.fail_reason.value if result.fail_reason else None,
            reject_reason=result.reject_reason.value if result.reject_reason else None,
            **({"bank_at_eject": reading} if reading else {}),
        )
        self._store.add_order_step(order_id, self._wall(), result.outcome.value, result.detail)

    async def resolve_pending(self, pending: PendingCommand) -> CommandOutcome:
        """Find the one final outcome of a command that was running when the daemon stopped."""
        body = pending.body
        if body is None:
            return CommandOutcome(CommandStatus.FAILED, detail="command body was not stored")
        command = body.command
        if not isinstance(command, EjectCommand):
            # Maintenance commands are safe to report as interrupted: the cloud may resend.
            return CommandOutcome(
                CommandStatus.FAILED, detail="interrupted by a gateway restart; send it again"
            )
        order_id = command.order_id or pending.command_id
        self.contexts[pending.unlock_token] = EjectContext(pending.command_id, order_id)
        deadline = self._deadline_after_restart(body.deadline.timestamp())
        self._store.open_order(
            order_id,
            "rent",
            command_id=pending.command_id,
            slot=command.slot,
            at=self._wall(),
            step=("resumed_after_restart", ""),
        )
        result = await self._bridge.resolve_eject(
            command.slot, pending.unlock_token, deadline=deadline
        )
        self.record_eject(order_id, result)
        return outcome_of_eject(result)

    def _deadline_after_restart(self, deadline_wall: float) -> float:
        """Convert a stored wall-clock deadline to monotonic time.

        The monotonic time of receipt did not survive the restart, so the wall clock is the
        only reference left. An unsynchronised clock could put the deadline later than it is,
        so without synchronisation the deadline counts as passed. The bridge then only queries
        the board for the outcome and never unlocks.
        """
        now = time.monotonic()
        if not self._wall_synchronised():
            return now
        return now + (deadline_wall - self._wall())
