"""The daemon's SQLite state: what must survive a restart."""

from __future__ import annotations

from pathlib import Path

from firmware_bridge import EventWatermark
from gateway.store import GatewayStore, HealthPoint


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = GatewayStore(path)
    store.save_disabled_slot(3, "lock broken")
    store.save_event_watermark(
        EventWatermark(board_id=0xFEDC_BA98_7654_3210, boot_count=7, event_id=42)
    )
    store.save_occupancy({1: (True, "00000000AABBCCDD"), 2: (False, None)})
    store.add_health_point("00000000AABBCCDD", HealthPoint(at=1.0, health_pct=93, cycles=120))
    store.close()

    reopened = GatewayStore(path)
    assert reopened.load_disabled_slots() == {3: "lock broken"}
    assert reopened.load_event_watermarks() == {
        0xFEDC_BA98_7654_3210: EventWatermark(0xFEDC_BA98_7654_3210, 7, 42)
    }
    assert reopened.load_occupancy() == {1: (True, "00000000AABBCCDD"), 2: (False, None)}
    assert reopened.health_history("00000000AABBCCDD") == [HealthPoint(1.0, 93, 120)]


def test_enabled_slot_forgotten(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "state.sqlite")
    store.save_disabled_slot(3, "lock broken")
    store.save_disabled_slot(3, None)
    assert store.load_disabled_slots() == {}


def test_order_found_by_id_or_bank(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "state.sqlite")
    store.open_order("order-1", "rent", command_id="cmd-1", slot=None, at=10.0)
    store.update_order("order-1", slot=4, bank_id="00000000AABBCCDD", outcome="taken")
    store.add_order_step("order-1", 10.0, "received", "cmd-1")
    store.add_order_step("order-1", 12.0, "taken")

    by_id = store.find_order("order-1")
    by_bank = store.find_order("00000000aabbccdd")
    assert by_id is not None
    assert by_id.slot == 4
    assert [step for _, step, _ in by_id.steps] == ["received", "taken"]
    assert by_bank == by_id
    assert store.find_order("absent") is None
