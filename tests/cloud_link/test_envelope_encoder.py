"""`EnvelopeEncoder` writes the same bytes as the pydantic `Envelope` model."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cloud_link import (
    BatteryHealth,
    Birth,
    CommandResult,
    CommandStatus,
    EjectOutcomeEvent,
    EjectReport,
    FaultEvent,
    Heartbeat,
    LowStockEvent,
    ReturnEvent,
    SecurityEvent,
    SlotSnapshot,
    StateChange,
    StockReport,
)
from cloud_link.messages import (
    AnyEnvelope,
    AnyMessageData,
    BoardSnapshot,
    EnvelopeEncoder,
    LinkStatus,
    OutboxStats,
    SecurityEventKind,
    timestamp,
)
from protocol.cabinet import EjectOutcome, FaultKind, LinkState, SlotState

WALL_S = 1_796_400_000.123456


def model_bytes(cabinet_id: str, seq: int, wall_s: float, offline: bool, data: object) -> bytes:
    envelope = AnyEnvelope.model_validate(
        {
            "cabinet_id": cabinet_id,
            "seq": seq,
            "ts": timestamp(datetime.fromtimestamp(wall_s, tz=UTC)),
            "offline": offline,
            "data": data,
        }
    )
    return envelope.model_dump_json().encode()


SAMPLES: list[AnyMessageData] = [
    Birth(
        gateway_version="1.2.3",
        slot_count=2,
        rentable_count=1,
        charging_count=0,
        empty_count=1,
        faulted_count=0,
        min_rentable_soc_percent=80,
        clock_synchronised=False,
        boards=(BoardSnapshot(address=0, online=True, first_slot=1, slot_count=2),),
        slots=(
            SlotSnapshot(slot=1, state=SlotState.READY, bank_id="00A1", soc_percent=91),
            SlotSnapshot(slot=2, state=SlotState.EMPTY, fault=FaultKind.LOCK_FAULT),
        ),
    ),
    StateChange(slot=0, state=SlotState.CHARGING, previous=SlotState.READY),
    EjectOutcomeEvent(
        command_id="cmd-1",
        order_id='order "7" é',
        report=EjectReport(outcome=EjectOutcome.TAKEN, slot=3, temperature_c=21.5, late=True),
    ),
    ReturnEvent(slot=7, bank_id="00A1B2C3D4E5F601", recognised=True, soc_percent=83),
    FaultEvent(fault=FaultKind.OVERHEAT, slot=2, detail="line\nbreak\ttab \\ \u0001"),
    SecurityEvent(event=SecurityEventKind.BAD_SIGNATURE, command_id="c", key_id="k"),
    LowStockEvent(reason="free_slots", rentable_count=1, free_slots=0, threshold=2),
    StockReport(rentable=1, charging=2, empty=3, faulted=0),
    BatteryHealth(slot=4, bank_id="ABCDEF", voltage_mv=12_000, current_ma=-300, retire=True),
    Heartbeat(
        uptime_s=5,
        link=LinkState.DEGRADED,
        clock_synchronised=True,
        interval_s=60,
        outbox=OutboxStats(
            pending=1, pending_bytes=2, telemetry_dropped=3, telemetry_coalesced=4, dead_letters=5
        ),
    ),
    CommandResult(command_id="c1", command="eject", status=CommandStatus.SUCCEEDED),
]


@pytest.mark.parametrize("data", SAMPLES, ids=lambda data: data.kind)
def test_encoder_matches_model_for_every_kind(data: AnyMessageData) -> None:
    encoder = EnvelopeEncoder("cab-001")

    encoded = encoder.encode(seq=42, wall_s=WALL_S, offline=True, data=data)

    assert encoded == model_bytes("cab-001", 42, WALL_S, True, data)


def test_every_message_kind_has_a_sample() -> None:
    kinds = {sample.kind for sample in SAMPLES}

    assert len(kinds) == len(SAMPLES)
    assert len(kinds) == 11


@given(
    cabinet_id=st.text(max_size=40),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    wall_s=st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
    offline=st.booleans(),
    data=st.sampled_from(SAMPLES),
)
@example(cabinet_id="a", seq=1, wall_s=0.9999995, offline=False, data=SAMPLES[0])
@example(cabinet_id="a", seq=1, wall_s=1_796_400_000.9995, offline=False, data=SAMPLES[0])
@example(cabinet_id="a", seq=1, wall_s=1_796_400_059.9999996, offline=False, data=SAMPLES[0])
def test_encoder_matches_model(
    cabinet_id: str, seq: int, wall_s: float, offline: bool, data: AnyMessageData
) -> None:
    encoder = EnvelopeEncoder(cabinet_id)

    first = encoder.encode(seq=seq, wall_s=wall_s, offline=offline, data=data)
    again = encoder.encode(seq=seq, wall_s=wall_s, offline=offline, data=data)

    assert first == model_bytes(cabinet_id, seq, wall_s, offline, data)
    assert again == first


def test_encoder_rejects_sequence_zero() -> None:
    encoder = EnvelopeEncoder("cab-001")

    with pytest.raises(ValueError, match="sequence number 0"):
        encoder.encode(seq=0, wall_s=WALL_S, offline=False, data=SAMPLES[0])


def test_encoder_rejects_other_models() -> None:
    encoder = EnvelopeEncoder("cab-001")
    status = LinkStatus(cabinet_id="cab-001", state="online", ts=datetime.now(UTC))

    with pytest.raises(TypeError, match="LinkStatus"):
        encoder.encode(seq=1, wall_s=WALL_S, offline=False, data=status)  # type: ignore[arg-type]
