"""S1TT slot boards: each board of the cabinet speaks the binary protocol of `protocol.s1tt`.

The wire address of a board is its configured address (0..N-1 by default) and the wire slot
is the board's local slot minus one. Where the published protocol leaves a behaviour open,
the choice made here is listed under "Simulator behaviour" in docs/protocol-s1tt.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cabinet_sim.board import Board
from cabinet_sim.emulation import Reply, board_address
from cabinet_sim.notices import Notice, NoticeKind
from cabinet_sim.s1tt_bank import MAX_U16, BankMemory, bank_status
from cabinet_sim.slot import InjectedFault, Slot
from protocol.s1tt.codec import decode_request, encode_error, encode_reply
from protocol.s1tt.codes import Command, Status
from protocol.s1tt.commands import command_spec
from protocol.s1tt.constants import MAX_FRAME, MIN_FRAME, START
from protocol.s1tt.deframer import Deframer
from protocol.s1tt.errors import PayloadError
from protocol.s1tt.frame import Frame, crc_matches
from protocol.s1tt.messages import (
    BankFirmware,
    BankInfoRequest,
    BatteryInfoRequest,
    ChargeRequest,
    Empty,
    FirmwareVersion,
    LedRequest,
    LinkCounters,
    LinkStats,
    Message,
    PdoRequest,
    SlotRef,
    SlotsReply,
    StatsRequest,
    UnlockCount,
    UnlockStats,
)
from protocol.slotbus.codes import BootReason, LockState, SlotFlag

if TYPE_CHECKING:
    from cabinet_sim.cabinet import Cabinet

logger = logging.getLogger(__name__)

UNSUPPORTED = frozenset(
    {
        Command.BANK_ENTER_BOOT,
        Command.BANK_FWU_HELLO,
        Command.BANK_FWU_BEGIN,
        Command.BANK_FWU_DATA,
        Command.BANK_FWU_END,
        Command.BANK_FWU_ABORT,
        Command.BANK_FWU_EXIT,
        Command.FWU_ENTER,
        Command.FWU_HELLO,
        Command.FWU_BEGIN,
        Command.FWU_DATA,
        Command.FWU_END,
        Command.FWU_ABORT,
        Command.FWU_EXIT,
    }
)
"""Firmware update commands, which the simulated boards reject with INVALID_COMMAND."""
BANK_RETRIES = 2
"""Retries a board makes on the contacts before it gives up on a bank (our choice)."""
REPLY_SPACING_S = 0.03
"""Gap between two replies in one batch, so that each one ends at a silent gap."""
INPUT_LIMIT = 2 * MAX_FRAME
BANK_FIRMWARE_NAME = "sim-bank"
BANK_FIRMWARE_VERSION = "1.0.0"


class Rejected(Exception):
    """A request that gets a status other than OK."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.name)
        self.status = status


@dataclass(slots=True)
class LinkCounter:
    attempts: int = 0
    retries: int = 0
    failures: int = 0


@dataclass(slots=True)
class BoardState:
    """Counters and settings of an S1TT board beyond the physical model, per wire slot 0..5."""

    link: list[LinkCounter]
    unlocks: list[int]
    leds: set[int] = field(default_factory=set)
    pdo: dict[int, tuple[int, int]] = field(default_factory=dict)


class S1ttBoards:
    """Every board of the cabinet on one S1TT line."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self.config = cabinet.config.s1tt
        slots = cabinet.config.slots_per_board
        self.states = {
            address: BoardState([LinkCounter() for _ in range(slots)], [0] * slots)
            for address in cabinet.boards
        }
        self.memory = BankMemory()
        self._input = bytearray()
        self._token = 0
        for board in cabinet.boards.values():
            board.events.acknowledge(board.events.last_id)
        cabinet.subscribe(self._on_notice)

    # The line

    def handle(self, data: bytes) -> list[Reply]:
        self._input += data
        if not self._segment_complete():
            if len(self._input) > INPUT_LIMIT:
                del self._input[: len(self._input) - INPUT_LIMIT]
            return []
        # The simulator has no real silence on the line, so it treats the end of a chunk that
        # ends in a valid frame as the gap. A chunk that ends in a chance CRC match inside a
        # longer frame is cut there, about once in 65536 chunks, and the request goes unanswered.
        deframer = Deframer()
        deframer.feed(bytes(self._input))
        frames = deframer.gap()
        self._input.clear()
        replies: list[Reply] = []
        for frame in frames:
            response = self._answer(frame)
            if response is not None:
                label = f"s1tt board {frame.address} command 0x{frame.command_id:02X}"
                replies.append(Reply(response, len(replies) * REPLY_SPACING_S, label))
        return replies

    def _segment_complete(self) -> bool:
        buffer = self._input
        end = len(buffer)
        return any(
            buffer[start] == START and crc_matches(buffer, start, end)
            for start in range(end - MIN_FRAME + 1)
        )

    def reset_input(self) -> None:
        self._input.clear()

    def set_silent(self, address: int | str, silent: bool) -> None:
        self.cabinet.board(board_address(address)).silent = silent

    def restart(self, address: int | str, reason: BootReason) -> None:
        self.cabinet.board(board_address(address)).boot(reason)

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.EVENT:
            # S1TT boards latch no events; keep the physical model's queues empty.
            board = self.cabinet.boards[notice.board]
            board.events.acknowledge(board.events.last_id)

    def _answer(self, frame: Frame) -> bytes | None:
        board = self.cabinet.boards.get(frame.address)
        if board is None or not board.responsive:
            return None
        board.sync_physics()
        spec = command_spec(frame.command_id)
        if spec is None or spec.command in UNSUPPORTED:
            return encode_error(frame.address, frame.command_id, Status.INVALID_COMMAND)
        try:
            request = decode_request(frame)
        except PayloadError as exc:
            logger.debug("s1tt board %d: invalid %s: %s", frame.address, spec.command.name, exc)
            return encode_error(frame.address, frame.command_id, Status.INVALID_ARGUMENTS)
        handler = self._handlers()[spec.command]
        try:
            return encode_reply(frame.address, spec.command, handler(board, request.body))
        except Rejected as exc:
            return encode_error(frame.address, frame.command_id, exc.status)
        except PayloadError as exc:
            # A simulated value outside its wire range, such as a capacity above 65535 mAh.
            logger.warning("s1tt board %d: cannot encode %s: %s", board.address, spec.command, exc)
            return encode_error(frame.address, frame.command_id, Status.INTERNAL_ERROR)

    def _handlers(self) -> dict[Command, Callable[[Board, Any], Message]]:
        return {
            Command.STATUS: self._status,
            Command.SET_CHARGE: self._set_charge,
            Command.RESET: self._reset_bank,
            Command.SET_PDO: self._set_pdo,
            Command.SLOTS: self._slots,
            Command.UNLOCK: self._unlock,
            Command.SET_LED: self._set_led,
            Command.SET_BANK_INFO: self._set_bank_info,
            Command.SET_BATTERY_INFO: self._set_battery_info,
            Command.BANK_FIRMWARE: self._bank_firmware,
            Command.FIRMWARE_VERSION: self._firmware_version,
            Command.LINK_STATS: self._link_stats,
            Command.UNLOCK_STATS: self._unlock_stats,
        }

    # Slots and banks

    @staticmethod
    def _slot(board: Board, wire_slot: int) -> Slot:
        slot = board.slots.get(wire_slot + 1)
        if slot is None:
            raise Rejected(Status.INVALID_ARGUMENTS)
        return slot

    def _reach_bank(self, board: Board, wire_slot: int) -> Slot:
        """Return the slot once its bank replied over the contacts; raise TIMEOUT otherwise."""
        slot = self._slot(board, wire_slot)
        counter = self.states[board.address].link[wire_slot]
        counter.attempts += 1
        if slot.bank is None or not slot.detected or not slot.id_readable:
            counter.retries += BANK_RETRIES
            counter.failures += 1
            raise Rejected(Status.TIMEOUT)
        return slot

    def _status(self, board: Board, request: SlotRef) -> Message:
        slot = self._reach_bank(board, request.slot)
        board.update_charging()
        return bank_status(slot, self.memory)

    def _set_charge(self, board: Board, request: ChargeRequest) -> Message:
        slot = self._slot(board, request.slot)
        if request.enable and InjectedFault.CHARGER in slot.injected:
            raise Rejected(Status.INTERNAL_ERROR)
        slot.charging_enabled = request.enable
        board.update_charging()
        return Empty()

    def _reset_bank(self, board: Board, request: SlotRef) -> Message:
        self._reach_bank(board, request.slot)
        logger.debug("s1tt board %d: bank in slot %d reset", board.address, request.slot)
        return Empty()

    def _set_pdo(self, board: Board, request: PdoRequest) -> Message:
        self._slot(board, request.slot)
        self.states[board.address].pdo[request.slot] = (request.voltage, request.current)
        return Empty()

    def _slots(self, board: Board, request: Empty) -> Message:
        filled = locks = 0
        for number, slot in board.slots.items():
            status = slot.status(board.now)
            if SlotFlag.BANK_PRESENT in status.flags:
                filled |= 1 << (number - 1)
            if status.lock is not LockState.LOCKED:
                locks |= 1 << (number - 1)
        return SlotsReply(filled, locks)

    def _unlock(self, board: Board, request: SlotRef) -> Message:
        """Fire the lock; OK even when it is stuck, since the board cannot tell."""
        self._slot(board, request.slot)
        self._token += 1
        code = board.open_lock(request.slot + 1, self._token, self.config.latch_open_s)
        self.states[board.address].unlocks[request.slot] += 1
        logger.info("s1tt board %d: unlock slot %d -> %s", board.address, request.slot, code.name)
        return Empty()

    def _set_led(self, board: Board, request: LedRequest) -> Message:
        if not 0 <= request.led < len(board.slots):
            raise Rejected(Status.INVALID_ARGUMENTS)
        leds = self.states[board.address].leds
        if request.on:
            leds.add(request.led)
        else:
            leds.discard(request.led)
        return Empty()

    def _set_bank_info(self, board: Board, request: BankInfoRequest) -> Message:
        slot = self._reach_bank(board, request.slot)
        self.memory.write_identity(slot, request)
        return Empty()

    def _set_battery_info(self, board: Board, request: BatteryInfoRequest) -> Message:
        slot = self._reach_bank(board, request.slot)
        total, current, cutoff = (
            request.total_charge_mah,
            request.current_charge_mah,
            request.cutoff_charge_mah,
        )
        if not cutoff < total or current > total:
            raise Rejected(Status.INVALID_ARGUMENTS)
        self.memory.write_capacities(slot, total, current, cutoff)
        return Empty()

    def _bank_firmware(self, board: Board, request: SlotRef) -> Message:
        self._reach_bank(board, request.slot)
        return BankFirmware(BANK_FIRMWARE_NAME, BANK_FIRMWARE_VERSION)

    def _firmware_version(self, board: Board, request: Empty) -> Message:
        return FirmwareVersion(self.config.firmware_version)

    def _link_stats(self, board: Board, request: StatsRequest) -> Message:
        state = self.states[board.address]
        reply = LinkStats(
            tuple(
                LinkCounters(c.attempts & MAX_U16, c.retries & MAX_U16, c.failures & MAX_U16)
                for c in state.link
            )
        )
        if request.reset:
            state.link = [LinkCounter() for _ in state.link]
        return reply

    def _unlock_stats(self, board: Board, request: StatsRequest) -> Message:
        state = self.states[board.address]
        reply = UnlockStats(tuple(UnlockCount(count) for count in state.unlocks))
        if request.reset:
            state.unlocks = [0] * len(state.unlocks)
        return reply
