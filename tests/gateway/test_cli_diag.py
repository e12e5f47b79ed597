"""Diagnostics CLI tests: every command, in both languages, against a real control socket."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
import string
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer
from typer.testing import CliRunner, Result

from gateway.api import (
    REDACTED,
    BankReply,
    BusReply,
    EventRecord,
    MaintenanceEjectReply,
    OrderEvidence,
    OutboxReply,
    SelfTestResult,
    SlotInfo,
    SlotsReply,
    StatusReply,
    redact_secrets,
    redact_text,
)
from gateway.cli_diag import register
from gateway.control import ControlServer
from gateway.i18n import Language, catalog, parse_language, resolve_language
from tests.gateway.test_control import NOW, WAIT_S, FakeDaemon

T = TypeVar("T")
GATEWAY = Path(__file__).parents[2] / "gateway"
# Rich wraps at the terminal width; a wide one keeps every cell on one line for the checks.
ENV = {"COLUMNS": "240", "CABINET_GATEWAY_LANG": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": ""}
EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, 3


@dataclass
class RunningDaemon:
    """A FakeDaemon served by ControlServer on its own event loop in a thread."""

    daemon: FakeDaemon
    path: Path
    loop: asyncio.AbstractEventLoop

    def run(self, function: Callable[[], T]) -> T:
        """Run `function` on the daemon's event loop and return its result."""

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(WAIT_S)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningDaemon]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        daemon = FakeDaemon()
        server = ControlServer(daemon, tmp_path / "control.sock", None)
        await server.start()
        holder.update(daemon=daemon, server=server)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="control-server", daemon=True)
    thread.start()
    assert started.wait(WAIT_S), "control server did not start"
    try:
        yield RunningDaemon(holder["daemon"], tmp_path / "control.sock", loop)
    finally:
        asyncio.run_coroutine_threadsafe(holder["server"].close(), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()


@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    return application


def invoke(
    app: typer.Typer, args: list[str], env: dict[str, str] | None = None, stdin: str = ""
) -> Result:
    return CliRunner().invoke(app, args, env={**ENV, **(env or {})}, input=stdin)


def cli(app: typer.Typer, running: RunningDaemon, *args: str, lang: str = "en") -> Result:
    return invoke(app, [*args, "--socket", str(running.path), "--lang", lang])


# (arguments, English text, Chinese text, values that must appear in both)
COMMANDS: list[tuple[list[str], str, str, list[str]]] = [
    (["status"], "Serial port", "串口", ["CAB-0042", "/dev/ttyS1", "no reply for 30 s", "1.4.2"]),
    (["slots"], "Faults", "故障", ["A1B2C3D4", "96 %", "cracked latch", "27.5 °C", "4.11 V"]),
    (["bank", "1"], "SoH history", "SoH 历史", ["A1B2C3D4", "850 mA", "9600 mAh", "93 %"]),
    (["bus"], "CRC errors", "CRC 错误", ["52001", "6 ms / 38 ms", "130"]),
    (["outbox"], "Dead letters", "死信", ["payload too large (149)", "20.0 KiB"]),
    (
        ["events", "--limit", "2"],
        "bank 00000000A1B2C3D3 returned",
        "充电宝 00000000A1B2C3D3 已归还",
        [],
    ),
    (["selftest", "2"], "passed", "通过", ["2"]),
    # Brackets in daemon data must print as they are, not as Rich markup.
    (["slot", "disable", "4", "--reason", "bent [/] pin"], "disabled", "已停用", ["bent [/] pin"]),
    (["slot", "enable", "4"], "enabled", "已启用", ["4"]),
    (
        ["eject", "1", "--maintenance", "--reason", "swollen", "--yes"],
        "taken",
        "已取走",
        ["A1B2C3D4", "4711"],
    ),
    (["order", "R-20261204-0001"], "at return", "归还时", ["A1B2C3D4", "35 %", "unlock_sent"]),
]


@pytest.mark.parametrize("case", COMMANDS, ids=lambda case: " ".join(case[0][:2]))
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_command_in_both_languages(
    app: typer.Typer,
    running: RunningDaemon,
    case: tuple[list[str], str, str, list[str]],
    lang: str,
) -> None:
    args, english, chinese, values = case
    result = cli(app, running, *args, lang=lang)
    assert result.exit_code == 0, result.output
    assert (chinese if lang == "zh-CN" else english) in result.output
    for value in values:
        assert value in result.output


def test_status_shows_translated_states(app: typer.Typer, running: RunningDaemon) -> None:
    english = cli(app, running, "status").output
    chinese = cli(app, running, "status", lang="zh-CN").output
    assert "degraded" in english
    assert "offline" in english
    assert "降级" in chinese
    assert "离线" in chinese
    assert "1 d 02:03:04" in english  # 93 784 s of uptime
    assert "1 天 02:03:04" in chinese
    assert "可租借 1，充电中 1" in chinese


JSON_MODELS: list[tuple[list[str], type[Any]]] = [
    (["status"], StatusReply),
    (["slots"], SlotsReply),
    (["bank", "2"], BankReply),
    (["bus"], BusReply),
    (["outbox"], OutboxReply),
    (["slot", "disable", "3", "--reason", "lock stuck"], SlotInfo),
    (["slot", "enable", "3"], SlotInfo),
    (["eject", "2", "--maintenance", "--reason", "retire", "--yes"], MaintenanceEjectReply),
    (["order", "R-20261204-0001"], OrderEvidence),
]


@pytest.mark.parametrize(("args", "model"), JSON_MODELS)
def test_json_output_valid(
    app: typer.Typer, running: RunningDaemon, args: list[str], model: type[Any]
) -> None:
    result = cli(app, running, *args, "--json", lang="zh-CN")
    assert result.exit_code == 0, result.output
    reply = model.model_validate(json.loads(result.stdout))
    assert reply.model_dump(mode="json", by_alias=True).get("schema", 1) == 1


def test_json_events_and_selftest(app: typer.Typer, running: RunningDaemon) -> None:
    events = json.loads(cli(app, running, "events", "--json").stdout)
    assert [EventRecord.model_validate(item).seq for item in events] == [1, 2, 3]

    running.daemon.failing_slots.add(3)
    result = cli(app, running, "selftest", "--json")
    assert result.exit_code == EXIT_FAILED
    report = json.loads(result.stdout)
    results = [SelfTestResult.model_validate(item) for item in report["results"]]
    assert [item.slot for item in results] == [1, 2, 3, 4]
    assert [item.slot for item in results if not item.passed] == [3]
    assert report["skipped"] == []


def test_selftest_all_slots_with_progress(app: typer.Typer, running: RunningDaemon) -> None:
    running.daemon.busy_slots.add(2)
    running.daemon.failing_slots.add(4)
    result = cli(app, running, "selftest", lang="zh-CN")
    assert result.exit_code == EXIT_FAILED
    assert running.daemon.calls == [("selftest", (slot,)) for slot in (1, 2, 3, 4)]
    assert "2 号仓位未自检：该仓位正在弹出或自检，请稍后重试。" in result.output
    assert "锁位置传感器" in result.output
    assert "4/4" in result.stderr  # the progress bar, on stderr so that stdout stays clean


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "The gateway daemon is not running (no socket at"), ("zh-CN", "网关守护进程未运行")],
)
def test_daemon_not_running_message(app: typer.Typer, tmp_path: Path, lang: str, text: str) -> None:
    missing = tmp_path / "no" / "control.sock"
    result = invoke(app, ["status", "--socket", str(missing), "--lang", lang])
    assert result.exit_code == EXIT_NOT_RUNNING
    assert text in result.stderr
    assert str(missing) in result.stderr
    assert "systemctl status cabinet-gateway" in result.stderr


@pytest.mark.parametrize(("lang", "text"), [("en", "connection refused at"), ("zh-CN", "拒绝连接")])
def test_daemon_refusing_connections(
    app: typer.Typer, tmp_path: Path, lang: str, text: str
) -> None:
    import socket

    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    result = invoke(app, ["slots", "--socket", str(path), "--lang", lang])
    assert result.exit_code == EXIT_NOT_RUNNING
    assert text in result.stderr


def test_daemon_not_running_json(app: typer.Typer, tmp_path: Path) -> None:
    result = invoke(app, ["status", "--json", "--socket", str(tmp_path / "x.sock")])
    assert result.exit_code == EXIT_NOT_RUNNING
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "daemon_not_running"
    assert "no_socket" in error["message"]


@pytest.mark.parametrize(("lang", "text"), [("en", "only for maintenance"), ("zh-CN", "维护弹出")])
def test_eject_requires_maintenance(
    app: typer.Typer, running: RunningDaemon, lang: str, text: str
) -> None:
    result = cli(app, running, "eject", "1", "--reason", "check", "--yes", lang=lang)
    assert result.exit_code == EXIT_USAGE
    assert text in result.stderr
    assert running.daemon.calls == []


def test_eject_requires_reason(app: typer.Typer, running: RunningDaemon) -> None:
    result = cli(app, running, "eject", "1", "--maintenance", "--yes", lang="zh-CN")
    assert result.exit_code == EXIT_USAGE
    assert "缺少 --reason" in result.stderr
    assert running.daemon.calls == []


def test_eject_prompt_declined(app: typer.Typer, running: RunningDaemon) -> None:
    args = ["eject", "1", "--maintenance", "--reason", "check", "--socket", str(running.path)]
    result = invoke(app, [*args, "--lang", "zh-CN"], stdin="n\n")
    assert result.exit_code == EXIT_FAILED
    assert "确定弹出 1 号仓位的充电宝吗" in result.stderr
    assert "已取消" in result.stderr
    assert running.daemon.calls == []


def test_eject_audits_technician(app: typer.Typer, running: RunningDaemon) -> None:
    args = ["eject", "2", "--maintenance", "--reason", "swollen case", "--technician", "li.wei"]
    result = invoke(app, [*args, "--socket", str(running.path)], stdin="y\n")
    assert result.exit_code == 0, result.output
    assert running.daemon.calls == [("maintenance_eject", (2, "swollen case", "li.wei"))]


def test_slot_disable_requires_reason(app: typer.Typer, running: RunningDaemon) -> None:
    result = cli(app, running, "slot", "disable", "2")
    assert result.exit_code == EXIT_USAGE
    assert "Missing --reason" in result.stderr
    assert running.daemon.calls == []


@pytest.mark.parametrize(
    ("args", "english", "chinese"),
    [
        (["bank", "9"], "No such slot in this cabinet.", "本机柜没有这个仓位。"),
        (["order", "R-404"], "Not found.", "未找到。"),
    ],
)
def test_daemon_error_translated(
    app: typer.Typer, running: RunningDaemon, args: list[str], english: str, chinese: str
) -> None:
    result_en = cli(app, running, *args)
    result_zh = cli(app, running, *args, lang="zh-CN")
    assert result_en.exit_code == EXIT_FAILED
    assert english in result_en.stderr
    assert result_zh.exit_code == EXIT_FAILED
    assert chinese in result_zh.stderr


def _follow(app: typer.Typer, running: RunningDaemon, *extra: str) -> Result:
    """Run `events --follow` while the fake daemon sends one live event and ends the stream."""
    args = ["events", "--follow", "--limit", "1", "--socket", str(running.path), *extra]
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(invoke, app, args)
        asyncio.run_coroutine_threadsafe(running.daemon.following.wait(), running.loop).result(
            WAIT_S
        )
        live = EventRecord(seq=11, at=NOW, kind="fault", slot=3, summary="lock stuck")
        running.run(lambda: running.daemon.live.put_nowait(live))
        # The fake ends the stream on None, as if the daemon stopped.
        running.run(lambda: running.daemon.live.put_nowait(None))
        return future.result(WAIT_S)


def test_events_follow_prints_live_events(app: typer.Typer, running: RunningDaemon) -> None:
    result = _follow(app, running, "--lang", "zh-CN")
    assert result.exit_code == 0, result.output
    assert "正在跟踪事件" in result.stderr
    assert "充电宝 00000000A1B2C3D3 已归还" in result.stdout
    assert "3 号仓位  lock stuck" in result.stdout


def test_events_follow_json_lines(app: typer.Typer, running: RunningDaemon) -> None:
    result = _follow(app, running, "--json")
    assert result.exit_code == 0, result.output
    records = [EventRecord.model_validate_json(line) for line in result.stdout.splitlines()]
    assert [record.seq for record in records] == [3, 11]
    assert records[1].summary == "lock stuck"


def test_bundle_archive_has_no_secrets(
    app: typer.Typer, running: RunningDaemon, tmp_path: Path
) -> None:
    output = tmp_path / "support" / "bundle.tar.gz"
    result = cli(app, running, "bundle", "-o", str(output), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["path"] == str(output)

    with tarfile.open(output, "r:gz") as tar:
        members = {
            Path(member.name).name: tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in tar.getmembers()
        }
    assert sorted(members) == sorted(
        ["manifest.json", "config.json", "status.json", "events.jsonl", "daemon.log"]
    )
    everything = "".join(members.values())
    assert "hunter2-fake" not in everything
    assert "fake-client.key" not in everything
    config = json.loads(members["config.json"])
    assert config["mqtt"]["password"] == REDACTED
    assert config["tls"]["client_key"] == REDACTED
    assert config["cabinet"]["id"] == "CAB-0042"
    assert "board 2 timed out" in members["daemon.log"]
    assert json.loads(members["status.json"])["cabinet_id"] == "CAB-0042"
    assert len(members["events.jsonl"].splitlines()) == 3


def test_bundle_default_name_in_both_languages(
    app: typer.Typer, running: RunningDaemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(app, running, "bundle", lang="zh-CN")
    assert result.exit_code == 0, result.output
    [archive] = tmp_path.glob("cabinet-CAB-0042-support-*.tar.gz")
    assert "支持诊断包已写入" in result.output
    assert archive.stat().st_mode & 0o077 == 0  # readable by its owner only


def test_bundle_into_directory(app: typer.Typer, running: RunningDaemon, tmp_path: Path) -> None:
    result = cli(app, running, "bundle", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    [archive] = tmp_path.glob("cabinet-CAB-0042-support-*.tar.gz")
    assert "Support bundle written to" in result.output
    assert tarfile.is_tarfile(archive)


def test_redact_secrets_cases() -> None:
    config = {
        "mqtt": {"url": "mqtts://gw:pa55@broker:8883", "username": "gw", "keepalive_s": 30},
        "tls": {"ca_file": "/etc/ca.pem", "key_file": "/etc/k.pem", "cert": "/etc/c.pem"},
        "signing": {"public_keys": ["/etc/a.pub", "/etc/b.pub"]},
        "pem": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
        "api_token": None,
    }
    redacted = redact_secrets(config)
    assert redacted["mqtt"] == {
        "url": f"mqtts://gw:{REDACTED}@broker:8883",
        "username": "gw",
        "keepalive_s": 30,
    }
    assert redacted["tls"] == {
        "ca_file": "/etc/ca.pem",
        "key_file": REDACTED,
        "cert": "/etc/c.pem",
    }
    # Over-redaction is accepted: any key name containing "key" is hidden, public keys too.
    assert redacted["signing"] == {"public_keys": REDACTED}
    assert redacted["pem"] == REDACTED
    assert redacted["api_token"] is None
    assert redact_text("login password=abc ok") == f"login password={REDACTED} ok"


# --- language choice and catalogs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "config_lang", "expected"),
    [
        ({}, None, Language.EN),
        ({"LANG": "zh_CN.UTF-8"}, None, Language.ZH_CN),
        ({"LANG": "C"}, None, Language.EN),
        ({"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, None, Language.EN),
        ({"LANG": "en_US.UTF-8"}, "zh-CN", Language.ZH_CN),
        ({"CABINET_GATEWAY_LANG": "en"}, "zh-CN", Language.EN),
        ({"CABINET_GATEWAY_LANG": "klingon", "LANG": "zh_TW"}, None, Language.ZH_CN),
    ],
)
def test_language_resolution_order(
    tmp_path: Path, env: dict[str, str], config_lang: str | None, expected: Language
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[cli]\nlang = "{config_lang}"\n' if config_lang else "[cli]\n")
    assert resolve_language(None, config, env) is expected
    assert resolve_language("en", config, env) is Language.EN
    assert resolve_language("zh-CN", config, env) is Language.ZH_CN


def test_language_from_env_and_config(
    app: typer.Typer, running: RunningDaemon, tmp_path: Path
) -> None:
    base = ["slots", "--socket", str(running.path)]
    assert "故障" in invoke(app, base, env={"CABINET_GATEWAY_LANG": "zh-CN"}).output
    assert "故障" in invoke(app, base, env={"LANG": "zh_CN.UTF-8"}).output
    config = tmp_path / "gateway.toml"
    config.write_text('[cli]\nlang = "zh-CN"\n')
    assert "故障" in invoke(app, [*base, "--config", str(config)]).output
    english = invoke(app, [*base, "--config", str(config), "--lang", "en"]).output
    assert "Faults" in english


def test_socket_path_from_config(app: typer.Typer, running: RunningDaemon, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[control]\nsocket = "{running.path}"\n')
    result = invoke(app, ["slots", "--config", str(config)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["status", "--lang", "zh-CN", "--help"], "显示链路"),
        (["slots", "--lang", "zh-CN", "--help"], "以 JSON 格式输出"),
        (["slot", "disable", "--lang", "zh-CN", "--help"], "停用仓位"),
        (["status", "--help"], "Show links, boards"),
    ],
)
def test_help_translated(app: typer.Typer, args: list[str], text: str) -> None:
    result = invoke(app, args)
    assert result.exit_code == 0, result.output
    assert text in result.output


def test_parse_language_tags() -> None:
    assert parse_language("zh-CN") is Language.ZH_CN
    assert parse_language("zh_CN.GB18030") is Language.ZH_CN
    assert parse_language("en_GB") is Language.EN
    assert parse_language("fr_FR.UTF-8") is None
    assert parse_language("") is None


def _msgids_in_code() -> dict[str, str]:
    """Return every literal passed to _() or N_() under gateway/, with where it is used."""
    found: dict[str, str] = {}
    for path in sorted(GATEWAY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            first = node.args[0]
            if name in ("_", "N_") and isinstance(first, ast.Constant):
                assert isinstance(first.value, str), f"{path.name}:{node.lineno}"
                found.setdefault(first.value, f"{path.name}:{node.lineno}")
    return found


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_msgid_translated() -> None:
    msgids = _msgids_in_code()
    translations = catalog(Language.ZH_CN)
    assert len(msgids) > 150
    missing = {msgid: where for msgid, where in msgids.items() if not translations.get(msgid)}
    assert not missing, f"msgids without a zh-CN translation: {missing}"
    for msgid in msgids:
        assert _fields(translations[msgid]) == _fields(msgid), msgid


def test_catalog_has_no_stale_entries() -> None:
    stale = set(catalog(Language.ZH_CN)) - set(_msgids_in_code())
    assert not stale, f"translations no code uses: {sorted(stale)}"


def test_translations_contain_chinese() -> None:
    han = re.compile(r"[\u4e00-\u9fff]")
    for msgid, text in catalog(Language.ZH_CN).items():
        if han.search(text) is None:
            # A translation without Chinese must at least differ from a shown English word.
            assert text != msgid, msgid


def test_po_file_is_valid_babel_catalog() -> None:
    from babel.messages.pofile import read_po

    path = GATEWAY / "locale" / "zh_CN" / "LC_MESSAGES" / "gateway.po"
    parsed = read_po(io.BytesIO(path.read_bytes()), locale="zh_CN")
    assert str(parsed.locale) == "zh_Hans_CN"
    assert not [message.id for message in parsed if message.fuzzy and message.id]
