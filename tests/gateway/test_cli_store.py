"""`cabinet-gateway store` on state files written by the real outbox, command store and orders."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cloud_link import (
    CommandBody,
    CommandResult,
    CommandSettings,
    CommandStatus,
    EjectCommand,
    FaultEvent,
    OutboxLimits,
    StateChange,
)
from cloud_link.clock import ManualClock
from cloud_link.command_store import CommandStore
from cloud_link.outbox import Outbox
from cloud_link.storage import Storage
from gateway.cli import app
from gateway.config import EXAMPLE_CONFIG_PATH
from gateway.i18n import Language, catalog
from gateway.store import GatewayStore
from protocol.cabinet import FaultKind, SlotState

# Rich wraps at the terminal width; a wide one keeps every cell on one line for the checks.
ENV = {"COLUMNS": "240", "CABINET_GATEWAY_LANG": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": ""}
EXIT_FAILED, EXIT_USAGE = 1, 2
CABINET = "CAB-000001"
# The state is written this long before each test, so the oldest message shows 02:00:xx.
WRITTEN_AGO_S = 7200
NOBODY = 65534


@dataclass
class State:
    config: Path
    database: Path
    written_at: float  # wall-clock time of the oldest rows


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(app, args, env=ENV)
    # Every outcome, errors included, must end in a message and an exit code, not a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def write_config(directory: Path, state_dir: Path) -> Path:
    text = EXAMPLE_CONFIG_PATH.read_text(encoding="utf-8")
    text = text.replace('state_dir = "/var/lib/cabinet-gateway"', f'state_dir = "{state_dir}"')
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def eject_body(command_id: str, slot: int, clock: ManualClock) -> CommandBody:
    issued = datetime.fromtimestamp(clock.wall(), UTC)
    return CommandBody(
        cabinet_id=CABINET,
        command_id=command_id,
        issued_at=issued,
        deadline=issued + timedelta(seconds=60),
        command=EjectCommand(slot=slot, order_id=f"R-{command_id}"),
    )


def fill_cloud_tables(storage: Storage, clock: ManualClock) -> None:
    """Queue 2 transactional, 1 urgent and 1 telemetry message and 1 dead letter.

    Also store one finished command and one still in progress.
    """
    outbox = Outbox(storage, cabinet_id=CABINET, limits=OutboxLimits(), clock=clock)
    commands = CommandStore(storage, settings=CommandSettings(), clock=clock)
    for slot in (1, 2, 3):
        outbox.enqueue(FaultEvent(fault=FaultKind.LOCK_FAULT, slot=slot), topic="t", offline=True)
    first = outbox.pending(1)[0]
    outbox.move_to_dead_letters(first.id, "payload too large", 149)
    clock.advance(60)
    outbox.enqueue(StateChange(slot=4, state=SlotState.CHARGING), topic="t", offline=True)
    result = CommandResult(command_id="cmd-done", command="eject", status=CommandStatus.SUCCEEDED)
    outbox.enqueue(result, topic="t", offline=True)

    commands.begin("cmd-done", eject_body("cmd-done", 2, clock), "key-1")
    commands.finish("cmd-done", result)
    commands.begin("cmd-eject-7", eject_body("cmd-eject-7", 7, clock), "key-1")


def fill_gateway_tables(store: GatewayStore, written_at: float) -> None:
    """Store 15 orders, R-00 oldest to R-14 newest, and disable slot 5."""
    for number in range(12):
        order_id = f"R-{number:02d}"
        store.open_order(
            order_id, "rent", command_id=None, slot=1 + number % 3, at=written_at + number
        )
        store.update_order(order_id, bank_id=f"00000000A1B2C3{number:02d}", outcome="taken")
    store.open_order("R-12", "rent", command_id="cmd-eject-7", slot=7, at=written_at + 20)
    store.open_order("T-13", "return", command_id=None, slot=3, at=written_at + 21)
    store.update_order("T-13", bank_id="00000000DEADBEEF", identified=False)
    store.open_order("R-14", "rent", command_id=None, slot=2, at=written_at + 22)
    store.update_order("R-14", outcome="failed", fail_reason="lock_fault")
    store.save_disabled_slot(5, "bent [/] pin")


@pytest.fixture
def state(tmp_path: Path) -> State:
    """A state directory as a stopped daemon leaves it, and a config that names it."""
    state_dir = tmp_path / "state"
    database = state_dir / "cloud_link.sqlite"
    store = GatewayStore(database)
    storage = Storage(database)
    written_at = time.time() - WRITTEN_AGO_S
    fill_cloud_tables(storage, ManualClock(written_at))
    fill_gateway_tables(store, written_at)
    storage.close()
    store.close()
    return State(write_config(tmp_path, state_dir), database, written_at)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in directory.iterdir()}


def summary(state: State, *args: str, lang: str = "en") -> Result:
    return invoke(["store", "summary", "--config", str(state.config), "--lang", lang, *args])


# --- summary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "texts"),
    [
        (
            "en",
            [
                "transactional",
                "Dead letters: 1. Telemetry dropped: 0.",
                "Commands in progress",
                "Newest orders",
                "returned, bank not identified",
                "failed (lock fault)",
                "in progress",
                "Disabled slots",
            ],
        ),
        (
            "zh-CN",
            [
                "业务",
                "死信：1 条。",
                "进行中的命令",
                "最近的订单",
                "已归还，充电宝未识别",
                "失败 (锁故障)",
                "进行中",
                "已停用的仓位",
            ],
        ),
    ],
)
def test_summary_in_both_languages(state: State, lang: str, texts: list[str]) -> None:
    result = summary(state, lang=lang)

    assert result.exit_code == 0, result.output
    for text in texts:
        assert text in result.output
    for value in ("cmd-eject-7", "R-14", "T-13", "00000000DEADBEEF", "bent [/] pin", "02:00:"):
        assert value in result.output
    assert str(state.database) in result.output


def test_summary_shows_only_newest_orders(state: State) -> None:
    output = summary(state).output

    assert "R-05" in output
    assert "R-04" not in output  # 15 orders stored, the 10 newest shown
    assert "cmd-done" not in output  # finished, so not in progress


def test_summary_json(state: State) -> None:
    result = summary(state, "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    lanes = {lane["lane"]: lane for lane in document["lanes"]}
    assert [lane["lane"] for lane in document["lanes"]] == ["urgent", "transactional", "telemetry"]
    assert lanes["urgent"]["messages"] == 1
    assert lanes["transactional"]["messages"] == 2  # the third was dead-lettered
    assert lanes["telemetry"]["messages"] == 1
    assert lanes["transactional"]["oldest_at"] == pytest.approx(state.written_at)
    assert lanes["transactional"]["oldest_age_s"] >= 7200
    assert lanes["transactional"]["bytes"] > 0
    assert document["dead_letters"] == 1
    assert [command["command_id"] for command in document["commands_in_progress"]] == [
        "cmd-eject-7"
    ]
    assert document["commands_in_progress"][0]["command"] == "eject"
    assert document["commands_in_progress"][0]["slot"] == 7
    orders = document["newest_orders"]
    assert [order["order_id"] for order in orders[:4]] == ["R-14", "T-13", "R-12", "R-11"]
    assert len(orders) == 10
    assert orders[1]["identified"] is False
    assert document["disabled_slots"] == [
        {"slot": 5, "reason": "bent [/] pin", "disabled_at": pytest.approx(time.time(), abs=600)}
    ]


def test_summary_leaves_files_unchanged(state: State) -> None:
    before = snapshot(state.database.parent)

    assert summary(state).exit_code == 0
    assert summary(state, "--json").exit_code == 0

    assert snapshot(state.database.parent) == before  # no -wal or -shm file created either


def test_summary_while_daemon_writes(state: State) -> None:
    storage = Storage(state.database)
    try:
        outbox = Outbox(storage, cabinet_id=CABINET, limits=OutboxLimits(), clock=ManualClock())
        outbox.enqueue(FaultEvent(fault=FaultKind.TAMPER, slot=9), topic="t", offline=True)
        directory = state.database.parent
        before = {name: data for name, (data, _) in snapshot(directory).items()}

        result = summary(state, "--json")

        assert result.exit_code == 0, result.output
        lanes = {lane["lane"]: lane for lane in json.loads(result.stdout)["lanes"]}
        assert lanes["transactional"]["messages"] == 3  # the new row is still in the -wal file
        after = {name: data for name, (data, _) in snapshot(directory).items()}
        assert after.keys() == before.keys()
        for name in (state.database.name, f"{state.database.name}-wal"):
            assert after[name] == before[name], name
    finally:
        storage.close()


KILLED_WRITER = """
import os, sys
from pathlib import Path
from cloud_link import FaultEvent, OutboxLimits
from cloud_link.clock import ManualClock
from cloud_link.outbox import Outbox
from cloud_link.storage import Storage
from protocol.cabinet import FaultKind

storage = Storage(Path(sys.argv[1]))
storage.conn.execute("PRAGMA wal_autocheckpoint = 0")
outbox = Outbox(storage, cabinet_id="CAB-000001", limits=OutboxLimits(), clock=ManualClock())
outbox.enqueue(FaultEvent(fault=FaultKind.TAMPER, slot=9), topic="t", offline=True)
os._exit(0)  # like a crash: no checkpoint, the -wal and -shm files stay
"""


def test_summary_after_daemon_killed(state: State) -> None:
    subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(state.database)], check=True, timeout=60
    )
    wal = Path(f"{state.database}-wal")
    assert wal.stat().st_size > 0
    before = {name: data for name, (data, _) in snapshot(state.database.parent).items()}

    result = summary(state, "--json")

    assert result.exit_code == 0, result.output
    lanes = {lane["lane"]: lane for lane in json.loads(result.stdout)["lanes"]}
    assert lanes["transactional"]["messages"] == 3
    after = {name: data for name, (data, _) in snapshot(state.database.parent).items()}
    assert after.keys() == before.keys()
    assert after[state.database.name] == before[state.database.name]
    assert after[wal.name] == before[wal.name]


def test_summary_with_state_file_option(state: State, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[cabinet\n", encoding="utf-8")
    args = ["store", "summary", "--config", str(broken), "--state-file", str(state.database)]

    result = invoke(args)

    assert result.exit_code == 0, result.output
    assert "cmd-eject-7" in result.output


# --- orders ----------------------------------------------------------------------------------


def orders(state: State, *args: str) -> list[dict[str, object]]:
    base = ["store", "orders", "--config", str(state.config), "--json"]
    result = invoke([*base, *args])
    assert result.exit_code == 0, result.output
    found: list[dict[str, object]] = json.loads(result.stdout)
    return found


def test_orders_filters(state: State) -> None:
    assert len(orders(state)) == 15
    assert [order["order_id"] for order in orders(state, "--limit", "2")] == ["R-14", "T-13"]
    by_bank = orders(state, "--bank", "00000000a1b2c303")
    assert [order["order_id"] for order in by_bank] == ["R-03"]
    by_slot = orders(state, "--slot", "2")
    assert {order["slot"] for order in by_slot} == {2}
    assert [order["order_id"] for order in by_slot][:2] == ["R-14", "R-10"]


@pytest.mark.parametrize(("lang", "heading"), [("en", "Orders"), ("zh-CN", "订单")])
def test_orders_table_in_both_languages(state: State, lang: str, heading: str) -> None:
    args = ["store", "orders", "--config", str(state.config), "--slot", "3", "--lang", lang]

    result = invoke(args)

    assert result.exit_code == 0, result.output
    assert heading in result.output
    assert "T-13" in result.output
    assert "R-14" not in result.output


@pytest.mark.parametrize(("lang", "text"), [("en", "No order found."), ("zh-CN", "没有找到订单。")])
def test_orders_none_found(state: State, lang: str, text: str) -> None:
    args = ["store", "orders", "--config", str(state.config), "--bank", "FFFF", "--lang", lang]

    result = invoke(args)

    assert result.exit_code == 0, result.output
    assert text in result.output


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "The daemon has not run yet with cabinet.state_dir"), ("zh-CN", "守护进程还没有使用")],
)
def test_missing_state_file(tmp_path: Path, lang: str, text: str) -> None:
    state_dir = tmp_path / "empty"
    config = write_config(tmp_path, state_dir)

    result = invoke(["store", "summary", "--config", str(config), "--lang", lang])

    assert result.exit_code == EXIT_FAILED
    assert text in result.stderr
    assert str(state_dir / "cloud_link.sqlite") in result.stderr
    assert not state_dir.exists()


def test_missing_state_file_json(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "empty")

    result = invoke(["store", "summary", "--config", str(config), "--json"])

    assert result.exit_code == EXIT_FAILED
    assert json.loads(result.stdout)["error"]["code"] == "state_missing"


@pytest.mark.parametrize(
    ("lang", "heading"), [("en", "Invalid configuration"), ("zh-CN", "配置无效")]
)
def test_invalid_config(tmp_path: Path, lang: str, heading: str) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[cabinet]\nid = 'bad id!'\n", encoding="utf-8")

    result = invoke(["store", "summary", "--config", str(broken), "--lang", lang])

    assert result.exit_code == EXIT_USAGE
    assert heading in result.stderr
    assert "cabinet.id" in result.stderr
    assert "--state-file" in result.stderr


def test_invalid_config_json(tmp_path: Path) -> None:
    result = invoke(["store", "summary", "--config", str(tmp_path / "none.toml"), "--json"])

    assert result.exit_code == EXIT_USAGE
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "config_invalid"
    assert f"file {tmp_path / 'none.toml'} not found" in error["message"]


def not_sqlite(path: Path) -> None:
    path.write_text("[cabinet]\nid = 'CAB-1'\n", encoding="utf-8")


def foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB)")
    conn.close()


@pytest.mark.parametrize(
    "make", [not_sqlite, foreign_database], ids=["not sqlite", "foreign database"]
)
@pytest.mark.parametrize(
    ("lang", "text"), [("en", "is not a gateway state file"), ("zh-CN", "不是网关的状态文件")]
)
def test_not_a_state_file(
    tmp_path: Path, make: Callable[[Path], None], lang: str, text: str
) -> None:
    path = tmp_path / "other.sqlite"
    make(path)

    result = invoke(["store", "summary", "--state-file", str(path), "--lang", lang])

    assert result.exit_code == EXIT_FAILED
    assert text in result.stderr
    assert str(path) in result.stderr


def alter(database: Path, sql: str) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute(sql)
    conn.close()


@pytest.mark.parametrize(
    ("sql", "english", "chinese"),
    [
        (
            "DROP TABLE orders",
            "Table orders is missing from",
            "缺少数据表 orders",
        ),
        (
            "ALTER TABLE commands DROP COLUMN received_at",
            "lacks the columns received_at",
            "数据表 commands 缺少列 received_at",
        ),
        (
            "UPDATE orders SET created_at = 'yesterday'",
            "Table orders in",
            "数据表 orders 含有当前网关版本无法读取的值",
        ),
        (
            "UPDATE outbox SET lane = 7",
            "Table outbox in",
            "数据表 outbox 含有当前网关版本无法读取的值",
        ),
    ],
    ids=["missing table", "missing column", "bad value", "unknown lane"],
)
def test_unexpected_schema(state: State, sql: str, english: str, chinese: str) -> None:
    alter(state.database, sql)

    english_result = summary(state)
    chinese_result = summary(state, lang="zh-CN")
    json_result = summary(state, "--json")

    assert english_result.exit_code == EXIT_FAILED
    assert english in english_result.stderr
    assert chinese_result.exit_code == EXIT_FAILED
    assert chinese in chinese_result.stderr
    assert json_result.exit_code == EXIT_FAILED
    assert json.loads(json_result.stdout)["error"]["code"] == "unexpected_schema"


def run_without_root(args: list[str]) -> tuple[int, str]:
    """Run the CLI in a forked child as the user `nobody`. Return its exit code and stderr.

    Root reads every file whatever its mode, so only a process without root gets EACCES. The
    child is forked after the parent has imported everything, because the user `nobody` may
    not be allowed to read the interpreter's own directory.
    """
    catalog(Language.ZH_CN)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        exit_status = 1
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = CliRunner().invoke(app, args, env=ENV)
            os.write(write_end, json.dumps([result.exit_code, result.stderr]).encode())
            exit_status = 0
        finally:
            os._exit(exit_status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child process failed"
    exit_code, stderr = json.loads(output)
    return int(exit_code), str(stderr)


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "Run the command as the gateway's user or as root"), ("zh-CN", "没有权限读取状态文件")],
)
def test_permission_denied(state: State, lang: str, text: str) -> None:
    # Warm-up run, so that the forked child needs no import that reads the disk.
    assert summary(state, lang=lang).exit_code == 0
    state.database.chmod(0o600)
    args = ["store", "summary", "--state-file", str(state.database), "--lang", lang]
    try:
        if os.geteuid() == 0:
            exit_code, stderr = run_without_root(args)
        else:
            state.database.chmod(0)
            result = invoke(args)
            exit_code, stderr = result.exit_code, result.stderr
    finally:
        state.database.chmod(0o644)

    assert exit_code == EXIT_FAILED
    assert text in stderr
    assert str(state.database) in stderr


# --- loading -----------------------------------------------------------------------------------


def test_full_cli_loads_no_sqlite_utils() -> None:
    code = "import sys, gateway.cli; print('sqlite_utils' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout

    assert output.strip() == "False"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["store", "summary", "--lang", "zh-CN", "--help"], "显示待发队列、进行中的命令"),
        (["store", "orders", "--lang", "zh-CN", "--help"], "只显示该仓位的订单"),
        (["store", "--help"], "Read the daemon's state file"),
    ],
)
def test_help_translated(args: list[str], text: str) -> None:
    result = invoke(args)

    assert result.exit_code == 0, result.output
    assert text in result.output
