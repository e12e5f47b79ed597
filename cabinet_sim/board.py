"""A simulated slot board: the slot-bus command interface on top of the board's hardware."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from cabinet_sim.hardware import BoardHardware
from protocol.slotbus.codec import decode_request, encode_error, encode_response
from protocol.slotbus.codes import (
    BankFault,
    BootReason,
    Capability,
    Command,
    EventKind,
    LockState,
    SlotFault,
    Status,
    TokenState,
)
from protocol.slotbus.commands import command_spec
from protocol.slotbus.constants import (
    CHARGE_UNKNOWN,
    MAX_BANKS_PER_READ,
    MAX_EVENTS_PER_READ,
    MAX_UNLOCK_WINDOW_S,
    MIN_UNLOCK_WINDOW_S,
    RESET_MAGIC,
)
from protocol.slotbus.errors import PayloadError
from protocol.slotbus.frame import Frame
from protocol.slotbus.messages import (
    NO_BANK_ID,
    AckAndRead,
    BankBatch,
    BankData,
    ChargingRequest,
    ChargingResult,
    Empty,
    EventAck,
    EventAckResult,
    EventBatch,
    EventsRequest,
    Identity,
    LockResult,
    Message,
    ResetRequest,
    SelfTestResult,
    SlotRange,
    SlotRef,
    SlotsStatus,
    TokenRef,
    UnlockRequest,
    UnlockResult,
    UnlockStatus,
)

logger = logging.getLogger(__name__)

ALL_CAPABILITIES = Capability(sum(Capability))
VERSION_2_CAPABILITIES = ALL_CAPABILITIES & ~(Capability.SLOT_RANGE | Capability.ACK_ON_READ)
VERSION_1_CAPABILITIES = VERSION_2_CAPABILITIES & ~Capability.BANK_BATCH
CAPABILITIES = {1: VERSION_1_CAPABILITIES, 2: VERSION_2_CAPABILITIES, 3: ALL_CAPABILITIES}
ADDED_COMMANDS = {
    2: frozenset({Command.GET_BANKS}),
    3: frozenset({Command.GET_SLOT_RANGE, Command.ACK_AND_READ_EVENTS}),
}
"""Commands each protocol version added; a board of an older version does not know them."""

_M = TypeVar("_M", bound=Message)


class Rejected(Exception):
    """A request that gets an error status in its response."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.name)
        self.status = status


def _expect(body: Message, kind: type[_M]) -> _M:
    if not isinstance(body, kind):
        raise Rejected(Status.INTERNAL_ERROR)
    return body


def _check_booleans(frame: Frame) -> None:
    # The codec decodes a boolean byte with struct "?", which takes any non-zero byte as true,
    # but the specification allows only 0 and 1 for SET_CHARGING's enable.
    if frame.command_id == Command.SET_CHARGING and frame.payload[1] > 1:
        raise PayloadError(f"enable must be 0 or 1, not {frame.payload[1]}")


class Board(BoardHardware):
    """One slot board on the bus. `handle_frame` is what the board does with a received frame."""

    def handle_frame(self, frame: Frame) -> bytes | None:
        """Return the response to `frame`, or None when the board stays silent."""
        if frame.address != self.address or frame.is_response or not self.responsive:
            return None
        self.sync_physics()
        handlers = self._handlers()
        spec = command_spec(frame.command_id)
        if spec is None or spec.command not in handlers:
            return encode_error(
                self.address, frame.sequence, frame.command_id, Status.UNKNOWN_COMMAND
            )
        try:
            request = decode_request(frame)
            _check_booleans(frame)
        except PayloadError as exc:
            logger.debug("board %d: invalid %s payload: %s", self.address, spec.command.name, exc)
            return encode_error(
                self.address, frame.sequence, frame.command_id, Status.INVALID_ARGUMENT
            )

        handler = handlers[spec.command]
        try:
            body = handler(request.body)
            response = encode_response(self.address, frame.sequence, spec.command, body)
        except Rejected as exc:
            return encode_error(self.address, frame.sequence, frame.command_id, exc.status)
        except PayloadError as exc:
            # A simulated value out of its wire range, such as a bank set to 4000 degC.
            logger.warning(
                "board %d: cannot encode %s response: %s", self.address, spec.command.name, exc
            )
            return encode_error(
                self.address, frame.sequence, frame.command_id, Status.INTERNAL_ERROR
            )
        if spec.command is Command.RESET:
            self.boot(BootReason.COMMANDED)
        return response

    def _handlers(self) -> dict[Command, Callable[[Message], Message]]:
        handlers: dict[Command, Callable[[Message], Message]] = {
            Command.IDENTIFY: self._identify,
            Command.GET_SLOTS: self._get_slots,
            Command.GET_BANK: self._get_bank,
            Command.GET_BANKS: self._get_banks,
            Command.UNLOCK: self._unlock,
            Command.LOCK: self._lock,
            Command.SET_CHARGING: self._set_charging,
            Command.SELF_TEST: self._self_test,
            Command.RESET: self._reset,
            Command.QUERY_UNLOCK: self._query_unlock,
            Command.READ_EVENTS: self._read_events,
            Command.ACK_EVENTS: self._ack_events,
            Command.GET_SLOT_RANGE: self._get_slot_range,
            Command.ACK_AND_READ_EVENTS: self._ack_and_read_events,
        }
        for version, commands in ADDED_COMMANDS.items():
            if self.config.slotbus_version < version:
                for command in commands:
                    del handlers[command]
        return handlers

    def _checked_slot(self, number: int) -> int:
        if number not in self.slots:
            raise Rejected(Status.INVALID_ARGUMENT)
        return number

    def _identify(self, body: Message) -> Identity:
        _expect(body, Empty)
        major, minor, patch = self.config.firmware_version
        version = self.config.slotbus_version
        return Identity(
            protocol_version=version,
            firmware_major=major,
            firmware_minor=minor,
            firmware_patch=patch,
            hardware_revision=self.config.hardware_revision,
            board_id=self.board_id,
            boot_count=self.boot_count & 0xFFFF,
            slot_count=len(self.slots),
            max_charging=self.config.charging.max_per_board,
            event_capacity=self.events.capacity,
            capabilities=CAPABILITIES[version],
        )

    def _get_slots(self, body: Message) -> SlotsStatus:
        _expect(body, Empty)
        self.update_charging()
        return SlotsStatus(tuple(slot.status(self.now) for slot in self.slots.values()))

    def _get_slot_range(self, body: Message) -> SlotsStatus:
        request = _expect(body, SlotRange)
        numbers = range(request.first_slot, request.first_slot + request.count)
        if request.count < 1 or not all(number in self.slots for number in numbers):
            raise Rejected(Status.INVALID_ARGUMENT)
        self.update_charging()
        return SlotsStatus(tuple(self.slots[number].status(self.now) for number in numbers))

    def _get_bank(self, body: Message) -> BankData:
        number = self._checked_slot(_expect(body, SlotRef).slot)
        record = self._bank_record(number)
        if record is None:
            raise Rejected(Status.NO_BANK)
        return record

    def _get_banks(self, body: Message) -> BankBatch:
        request = _expect(body, SlotRange)
        if not 1 <= request.count <= MAX_BANKS_PER_READ:
            raise Rejected(Status.INVALID_ARGUMENT)
        numbers = range(request.first_slot, request.first_slot + request.count)
        if not all(number in self.slots for number in numbers):
            raise Rejected(Status.INVALID_ARGUMENT)
        records = (self._bank_record(number) for number in numbers)
        return BankBatch(tuple(record for record in records if record is not None))

    def _bank_record(self, number: int) -> BankData | None:
        """Return the GET_BANK record of a slot, or None when no bank is detected in it."""
        slot = self.slots[number]
        bank = slot.bank
        if not slot.detected or bank is None:
            return None
        if not slot.id_readable:
            return BankData(
                number, NO_BANK_ID, CHARGE_UNKNOWN, 0, 0, 0, 0, 0, 0, BankFault.COMMUNICATION
            )
        faults = BankFault(0)
        if bank.temperature_c > self.config.charging.overheat_c:
            faults |= BankFault.OVER_TEMPERATURE
        if bank.charge <= 0:
            faults |= BankFault.UNDER_VOLTAGE
        return BankData(
            slot=number,
            bank_id=bank.bank_id,
            charge=bank.charge_percent,
            voltage_mv=bank.voltage_mv,
            current_ma=round(bank.current_ma),
            temperature_dc=round(bank.temperature_c * 10),
            cycles=min(bank.cycles, 0xFFFF),
            health=round(bank.health),
            capacity_mah=bank.capacity_mah,
            faults=faults,
        )

    def _unlock(self, body: Message) -> UnlockResult:
        request = _expect(body, UnlockRequest)
        number = self._checked_slot(request.slot)
        if not MIN_UNLOCK_WINDOW_S <= request.window_s <= MAX_UNLOCK_WINDOW_S or request.token == 0:
            raise Rejected(Status.INVALID_ARGUMENT)
        record = self.tokens.get(request.token)
        if record is not None:
            return UnlockResult(record.slot, request.token, record.result, repeated=True)
        if self.slots[number].window is not None:
            raise Rejected(Status.BUSY)
        result = self.open_lock(number, request.token, request.window_s)
        logger.info(
            "board %d slot %d: unlock token %d -> %s",
            self.address,
            number,
            request.token,
            result.name,
        )
        return UnlockResult(number, request.token, result, repeated=False)

    def _lock(self, body: Message) -> LockResult:
        number = self._checked_slot(_expect(body, SlotRef).slot)
        if not self.lock_slot(number):
            raise Rejected(Status.SLOT_FAULT)
        return LockResult(number, LockState.LOCKED)

    def _set_charging(self, body: Message) -> ChargingResult:
        request = _expect(body, ChargingRequest)
        number = self._checked_slot(request.slot)
        self.slots[number].charging_enabled = request.enable
        self.update_charging()
        return ChargingResult(number, self.slots[number].charging)

    def _self_test(self, body: Message) -> SelfTestResult:
        number = self._checked_slot(_expect(body, SlotRef).slot)
        slot = self.slots[number]
        if slot.window is not None:
            raise Rejected(Status.BUSY)
        failed = slot.self_test_failures()
        if not failed:
            slot.latched_faults &= ~(SlotFault.LOCK_STUCK | SlotFault.LOCK_NOT_RETURNED)
        return SelfTestResult(number, failed)

    def _reset(self, body: Message) -> Empty:
        if _expect(body, ResetRequest).magic != RESET_MAGIC:
            raise Rejected(Status.INVALID_ARGUMENT)
        kinds = self.events.pending_kinds()
        if kinds and kinds != [EventKind.BOARD_BOOT]:
            raise Rejected(Status.BUSY)
        # A reboot during a take window would lose the unlock's terminal event.
        if any(slot.window is not None for slot in self.slots.values()):
            raise Rejected(Status.BUSY)
        return Empty()

    def _query_unlock(self, body: Message) -> UnlockStatus:
        token = _expect(body, TokenRef).token
        if token == 0:
            raise Rejected(Status.INVALID_ARGUMENT)
        record = self.tokens.get(token)
        if record is None:
            return UnlockStatus(token, TokenState.UNKNOWN, 0, NO_BANK_ID)
        return UnlockStatus(token, record.state, record.slot, record.bank_id)

    def _read_events(self, body: Message) -> EventBatch:
        count = _expect(body, EventsRequest).max_events
        if not 1 <= count <= MAX_EVENTS_PER_READ:
            raise Rejected(Status.INVALID_ARGUMENT)
        return EventBatch(
            self.boot_count & 0xFFFF,
            self.events.dropped,
            self.events.pending,
            self.events.oldest(count),
        )

    def _ack_and_read_events(self, body: Message) -> EventBatch:
        request = _expect(body, AckAndRead)
        if not 1 <= request.max_events <= MAX_EVENTS_PER_READ:
            raise Rejected(Status.INVALID_ARGUMENT)
        if request.boot_count == self.boot_count & 0xFFFF:
            if request.up_to > self.events.last_id:
                raise Rejected(Status.INVALID_ARGUMENT)
            self.events.acknowledge(request.up_to)
        return self._read_events(EventsRequest(request.max_events))

    def _ack_events(self, body: Message) -> EventAckResult:
        ack = _expect(body, EventAck)
        # An ACK read in an earlier boot must not delete events of this boot.
        if ack.up_to > self.events.last_id or ack.boot_count != self.boot_count & 0xFFFF:
            raise Rejected(Status.INVALID_ARGUMENT)
        self.events.acknowledge(ack.up_to)
        return EventAckResult(self.events.pending)
