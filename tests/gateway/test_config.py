"""Daemon configuration: loading, validation messages, environment overrides, `config check`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import EXAMPLE_CONFIG_PATH, ConfigError, check_resources, load_config

TRUSTED = base64.b64encode(
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()


def usable_example(tmp_path: Path) -> Path:
    """The shipped example with TLS switched off and a real public key, so it validates."""
    text = EXAMPLE_CONFIG_PATH.read_text(encoding="utf-8")
    text = text.replace("enabled = true", "enabled = false")
    text = text.replace(
        "REPLACE_WITH_BASE64_PUBLIC_KEY_FROM_cabinet-gateway_cloud_keygen=", TRUSTED
    )
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_example_config_loads(tmp_path: Path) -> None:
    config = load_config(usable_example(tmp_path))
    assert config.cabinet.id == "CAB-000001"
    assert config.mqtt.cabinet_id == "CAB-000001"
    assert config.serial.slot_count == 12
    assert check_resources(config) == []


def test_shipped_example_names_missing_files(tmp_path: Path) -> None:
    problems = check_resources(load_config(EXAMPLE_CONFIG_PATH))
    assert any(p.startswith("mqtt.tls.ca_file") for p in problems)
    assert any(p.startswith("mqtt.commands.trusted_keys") for p in problems)


def test_invalid_values_name_key_and_value(tmp_path: Path) -> None:
    text = usable_example(tmp_path).read_text(encoding="utf-8")
    text = text.replace("port = 8883", 'port = "eighty"').replace("address = 2", "address = 300")
    problems = problems_of(write(tmp_path, text))
    assert any(p.startswith("mqtt.port:") and "'eighty'" in p for p in problems)
    assert any(p.startswith("serial.boards.1.address:") and "300" in p for p in problems)


def test_unknown_and_missing_keys(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, '[cabinet]\nid = "C1"\ncolour = "red"\n'))
    assert any(p.startswith("cabinet.colour:") and "unknown key" in p for p in problems)
    assert any(p.startswith("serial:") and "missing" in p for p in problems)
    assert any(p.startswith("mqtt:") and "missing" in p for p in problems)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems_of(write(tmp_path, "[cabinet\n"))[0]
    assert "file not found" in problems_of(tmp_path / "absent.toml")[0]


def test_duplicate_board_addresses(tmp_path: Path) -> None:
    text = (
        usable_example(tmp_path).read_text(encoding="utf-8").replace("address = 2", "address = 1")
    )
    problems = problems_of(write(tmp_path, text))
    assert any("unique" in p and "[1, 1]" in p for p in problems)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = usable_example(tmp_path)
    monkeypatch.setenv("CABINET_GATEWAY_MQTT__HOST", "broker.test")
    monkeypatch.setenv("CABINET_GATEWAY_SERIAL__UNLOCK_WINDOW_S", "45")
    config = load_config(path)
    assert config.mqtt.host == "broker.test"
    assert config.serial.unlock_window_s == 45


def test_invalid_environment_value_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABINET_GATEWAY_MQTT__KEEPALIVE_S", "abc")
    problems = problems_of(usable_example(tmp_path))
    assert any(p.startswith("mqtt.keepalive_s:") and "'abc'" in p for p in problems)


@pytest.mark.parametrize(
    ("lang", "heading"), [("en", "Invalid configuration"), ("zh-CN", "配置无效")]
)
def test_config_check_command(tmp_path: Path, lang: str, heading: str) -> None:
    runner = CliRunner()
    good = runner.invoke(
        app, ["config", "check", "--config", str(usable_example(tmp_path)), "--lang", lang]
    )
    bad = runner.invoke(
        app, ["config", "check", "--config", str(EXAMPLE_CONFIG_PATH), "--lang", lang]
    )
    assert good.exit_code == 0, good.output
    assert "CAB-000001" in good.output
    assert bad.exit_code == 2
    assert heading in bad.output
    assert "mqtt.tls.ca_file" in bad.output


def test_config_example_command_prints_file() -> None:
    result = CliRunner().invoke(app, ["config", "example"])
    assert result.exit_code == 0
    assert result.output == EXAMPLE_CONFIG_PATH.read_text(encoding="utf-8")


def test_unknown_key_in_board_table(tmp_path: Path) -> None:
    text = usable_example(tmp_path).read_text(encoding="utf-8")
    text = text.replace("address = 2\nslot_count = 6", "address = 2\nslot_count = 6\ncolour = 3")
    problems = problems_of(write(tmp_path, text))
    assert any(p.startswith("serial.boards.1.colour:") and "unknown key" in p for p in problems)


def test_section_from_environment_must_be_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CABINET_GATEWAY_SERIAL__BOARDS", "foo")
    with pytest.raises(ConfigError) as caught:
        load_config(usable_example(tmp_path))
    assert "CABINET_GATEWAY_SERIAL__BOARDS" in caught.value.source
    assert "JSON" in caught.value.problems[0]


def test_environment_named_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABINET_GATEWAY_MQTT__PORT", "abc")
    with pytest.raises(ConfigError) as caught:
        load_config(usable_example(tmp_path))
    assert "CABINET_GATEWAY_MQTT__PORT" in str(caught.value)


def test_board_address_zero_only_for_s1tt(tmp_path: Path) -> None:
    text = (
        usable_example(tmp_path).read_text(encoding="utf-8").replace("address = 1", "address = 0")
    )
    problems = problems_of(write(tmp_path, text))
    assert any("address 0 is valid only with protocol s1tt" in p for p in problems)

    s1tt = text.replace('protocol = "native"', 'protocol = "s1tt"')
    assert load_config(write(tmp_path, s1tt)).serial.boards[0].address == 0


def test_battery_reports_limited_per_bank(tmp_path: Path) -> None:
    from firmware_bridge import BankHealthReport
    from gateway.daemon import Daemon

    text = usable_example(tmp_path).read_text(encoding="utf-8")
    text = text.replace('state_dir = "/var/lib/cabinet-gateway"', f'state_dir = "{tmp_path}"')
    daemon = Daemon(load_config(write(tmp_path, text)))

    def report(bank: str, retire: bool = False) -> BankHealthReport:
        return BankHealthReport(
            bank_id=bank, slot=1, health_pct=80, health_trend=(80,), cycles=5, retire=retire, at=0.0
        )

    assert not daemon._health_too_soon(report("A"))
    assert daemon._health_too_soon(report("A"))
    assert not daemon._health_too_soon(report("B"))
    assert not daemon._health_too_soon(report("A", retire=True))
