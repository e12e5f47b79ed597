"""SimConfig validation and the map from cabinet slots to boards."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cabinet_sim import Cabinet, ChargingConfig, SimConfig, SimulationError, SlotAddress


def test_default_layout() -> None:
    config = SimConfig()
    assert config.board_addresses() == (1, 2, 3, 4)
    assert config.slot_count == 24
    slot_map = config.slot_map()
    assert slot_map[0] == SlotAddress(1, 1)
    assert slot_map[6] == SlotAddress(2, 1)
    assert slot_map[23] == SlotAddress(4, 6)


def test_listed_addresses_keep_bus_order() -> None:
    config = SimConfig(boards=(7, 3), slots_per_board=2)
    assert config.slot_map() == (
        SlotAddress(7, 1),
        SlotAddress(7, 2),
        SlotAddress(3, 1),
        SlotAddress(3, 2),
    )
    cabinet = Cabinet(config)
    assert cabinet.locate(3) == SlotAddress(3, 1)
    assert cabinet.cabinet_slot(7, 2) == 2
    assert cabinet.board(3).address == 3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"boards": 5, "slots_per_board": 12}, "more than the 48"),
        ({"boards": (1, 1)}, "duplicates"),
        ({"boards": (0,)}, "outside 1..247"),
        ({"boards": (248,)}, "outside 1..247"),
        ({"boards": ()}, "at least one board"),
        ({"slots_per_board": 13}, "slots_per_board"),
        ({"slots_per_board": 2, "charging": ChargingConfig(max_per_board=3)}, "max_per_board"),
        ({"token_cache_size": 31}, "token_cache_size"),
        ({"slotbus_version": 0}, "slotbus_version"),
        ({"slotbus_version": 4}, "slotbus_version"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_configs(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SimConfig.model_validate(values)


def test_unknown_slot_and_board() -> None:
    cabinet = Cabinet(SimConfig(boards=1))
    with pytest.raises(SimulationError, match=r"outside 1\.\.6"):
        cabinet.locate(7)
    with pytest.raises(SimulationError, match="no board at address 2"):
        cabinet.board(2)
    with pytest.raises(SimulationError, match="has no slot 9"):
        cabinet.cabinet_slot(1, 9)
