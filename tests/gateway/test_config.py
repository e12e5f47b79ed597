"""Daemon configuration: loading, validation messages, environment overrides, `config check`."""

from __future__ import annotations

import base64
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from gateway.cli import app
from gateway.cli_daemon import EX_CONFIG
from gateway.config import EXAMPLE_CONFIG_PATH, ConfigError, check_resources, load_config
from gateway.i18n import Language, activate
from gateway.logs import RecentLines

TRUSTED = base64.b64encode(
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()


@pytest.fixture(autouse=True)
def english_messages() -> Iterator[None]:
    """Start and leave each test in English, whatever language a command activated."""
    activate(Language.EN)
    yield
    activate(Language.EN)


def usable_example(tmp_path: Path, state_dir: Path | None = None) -> Path:
    """The shipped example with TLS switched off, a real public key and a state directory in
    `tmp_path`, so it validates.
    """
    text = EXAMPLE_CONFIG_PATH.read_text(encoding="utf-8")
    text = text.replace(
        'state_dir = "/var/lib/cabinet-gateway"',
        f'state_dir = "{state_dir or tmp_path / "state"}"',
    )
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
    missing = problems_of(tmp_path / "absent.toml")[0]
    assert f"file {tmp_path / 'absent.toml'} not found" in missing
    assert "Check the path given with --config" in missing


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

    daemon = Daemon(load_config(usable_example(tmp_path)))

    def report(bank: str, retire: bool = False) -> BankHealthReport:
        return BankHealthReport(
            bank_id=bank, slot=1, health_pct=80, health_trend=(80,), cycles=5, retire=retire, at=0.0
        )

    assert not daemon._health_too_soon(report("A"))
    assert daemon._health_too_soon(report("A"))
    assert not daemon._health_too_soon(report("B"))
    assert not daemon._health_too_soon(report("A", retire=True))


def test_invalid_cabinet_id_reported_once(tmp_path: Path) -> None:
    text = usable_example(tmp_path).read_text(encoding="utf-8")
    problems = problems_of(write(tmp_path, text.replace('id = "CAB-000001"', 'id = "bad id!"')))
    assert [p for p in problems if "'bad id!'" in p] == [
        next(p for p in problems if p.startswith("cabinet.id:"))
    ]
    assert not any(p.startswith("mqtt.cabinet_id") for p in problems)


def test_invalid_cabinet_id_from_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CABINET_GATEWAY_CABINET__ID", "bad id!")
    problems = problems_of(usable_example(tmp_path))
    assert len([p for p in problems if "'bad id!'" in p]) == 1
    assert not any(p.startswith("mqtt.cabinet_id") for p in problems)


def test_written_mqtt_cabinet_id_still_checked(tmp_path: Path) -> None:
    text = usable_example(tmp_path).read_text(encoding="utf-8")
    text = text.replace("[mqtt]\n", '[mqtt]\ncabinet_id = "other id!"\n', 1)
    problems = problems_of(write(tmp_path, text))
    assert any(p.startswith("mqtt.cabinet_id:") and "'other id!'" in p for p in problems)


# --- state directory ------------------------------------------------------------------------


def test_state_dir_below_file_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    state_dir = tmp_path / "file" / "state"
    problems = check_resources(load_config(usable_example(tmp_path, state_dir)))
    assert len(problems) == 1
    assert problems[0].startswith(
        f"cabinet.state_dir: cannot create or write to the directory {state_dir}"
    )
    assert os.strerror(errno.ENOTDIR) in problems[0]
    assert "writable for the user that runs the gateway" in problems[0]


def test_state_dir_without_permission_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests may run as root, and os.access grants root write access to every directory.
    config = load_config(usable_example(tmp_path, tmp_path / "new" / "state"))
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    problems = check_resources(config)
    assert len(problems) == 1
    assert f"{os.strerror(errno.EACCES)}: {tmp_path}" in problems[0]


def test_state_file_without_permission_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(usable_example(tmp_path))
    config.cabinet.state_dir.mkdir()
    config.lock_path.write_text("")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != config.lock_path)
    problems = check_resources(config)
    assert len(problems) == 1
    assert f"{os.strerror(errno.EACCES)}: {config.lock_path}" in problems[0]


def test_state_dir_check_creates_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "new" / "state"
    config = usable_example(tmp_path, state_dir)
    result = CliRunner().invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "new").exists()


def test_config_check_reports_state_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    state_dir = tmp_path / "file" / "state"
    config = usable_example(tmp_path, state_dir)
    result = CliRunner().invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert f"cabinet.state_dir: cannot create or write to the directory {state_dir}" in (
        result.output.replace("\n", "")
    )


# --- run: configuration errors stop systemd's restarts ---------------------------------------


def run_gateway(*args: str) -> Result:
    return CliRunner().invoke(app, ["run", *args])


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "cannot create or write to the directory"), ("zh", "无法创建或写入目录")],
)
def test_run_state_dir_below_file(tmp_path: Path, lang: str, text: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    state_dir = tmp_path / "file" / "state"
    result = run_gateway("--config", str(usable_example(tmp_path, state_dir)), "--lang", lang)
    output = result.output.replace("\n", "")
    assert result.exit_code == EX_CONFIG, output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert text in output
    assert str(state_dir) in output
    assert os.strerror(errno.ENOTDIR) in output


@pytest.fixture
def unchecked_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let `run` reach the daemon with a state directory that check_resources did not see.

    Logging stays as pytest set it up: the daemon's setup would remove pytest's handlers.
    """
    monkeypatch.setattr("gateway.cli_daemon.check_resources", lambda *args, **kwargs: [])
    monkeypatch.setattr("gateway.logs.setup_logging", lambda level: RecentLines())


@pytest.mark.usefixtures("unchecked_run")
def test_run_guards_daemon_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    state_dir = tmp_path / "file" / "state"
    result = run_gateway("--config", str(usable_example(tmp_path, state_dir)))
    output = result.output.replace("\n", "")
    assert result.exit_code == EX_CONFIG, output
    assert f"cannot create or write to the directory {state_dir}" in output
    assert os.strerror(errno.ENOTDIR) in output


@pytest.mark.usefixtures("unchecked_run")
def test_run_guards_daemon_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    state_dir = tmp_path / "new" / "state"
    monkeypatch.setattr(Path, "mkdir", denied)
    result = run_gateway("--config", str(usable_example(tmp_path, state_dir)))
    output = result.output.replace("\n", "")
    assert result.exit_code == EX_CONFIG, output
    assert f"cannot create or write to the directory {state_dir}" in output
    assert os.strerror(errno.EACCES) in output


@pytest.mark.usefixtures("unchecked_run")
def test_run_keeps_other_os_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/dev/ttyMISSING")

    monkeypatch.setattr("gateway.daemon.Daemon", fail)
    result = run_gateway("--config", str(usable_example(tmp_path)))
    assert isinstance(result.exception, FileNotFoundError)


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "Check the path given with --config"), ("zh-CN", "请检查 --config 指定的路径")],
)
def test_run_missing_config_exits_ex_config(tmp_path: Path, lang: str, text: str) -> None:
    absent = tmp_path / "absent.toml"
    result = run_gateway("--config", str(absent), "--lang", lang)
    output = result.output.replace("\n", "")
    assert result.exit_code == EX_CONFIG, output
    assert text in output
    assert f"{absent}" in output


def test_run_invalid_config_exits_ex_config(tmp_path: Path) -> None:
    result = run_gateway("--config", str(write(tmp_path, "[cabinet\n")))
    assert result.exit_code == EX_CONFIG, result.output
    assert "not valid TOML" in result.output


def test_config_check_missing_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "check", "--config", str(tmp_path / "absent")])
    assert result.exit_code == 2


# --- --lang -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["zh", "zh-CN", "ZH-cn"])
def test_lang_option_accepts_zh(tmp_path: Path, value: str) -> None:
    config = str(usable_example(tmp_path))
    result = CliRunner().invoke(app, ["config", "check", "--config", config, "--lang", value])
    assert result.exit_code == 0, result.output
    assert "配置" in result.output


def test_lang_option_rejects_unknown(tmp_path: Path) -> None:
    config = str(usable_example(tmp_path))
    result = CliRunner().invoke(app, ["config", "check", "--config", config, "--lang", "fr"])
    output = " ".join(result.output.replace("│", " ").split())  # undo the error box's wrapping
    assert result.exit_code == 2
    assert "'fr'" in output
    assert "Use en, zh-CN or zh" in output
