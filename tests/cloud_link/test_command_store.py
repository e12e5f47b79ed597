"""Idempotency store on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_link import (
    BeginState,
    CommandBody,
    CommandResult,
    CommandSettings,
    CommandStatus,
    CommandStore,
    EjectCommand,
    ReplyTo,
    UnknownCommandError,
    unlock_token_for,
)
from cloud_link.clock import ManualClock
from cloud_link.storage import Storage


def open_store(path: Path, clock: ManualClock, **settings: object) -> tuple[Storage, CommandStore]:
    storage = Storage(path)
    store = CommandStore(storage, settings=CommandSettings.model_validate(settings), clock=clock)
    return storage, store


def body(command_id: str) -> CommandBody:
    issued = datetime(2027, 1, 1, tzinfo=UTC)
    return CommandBody(
        cabinet_id="cab-001",
        command_id=command_id,
        issued_at=issued,
        deadline=issued + timedelta(seconds=30),
        command=EjectCommand(slot=3),
    )


def succeeded(command_id: str) -> CommandResult:
    return CommandResult(command_id=command_id, command="eject", status=CommandStatus.SUCCEEDED)


def test_begin_reports_each_state(tmp_path: Path) -> None:
    storage, store = open_store(tmp_path / "db.sqlite", ManualClock())
    first = store.begin("c1", body("c1"), "k1")
    second = store.begin("c1")
    store.finish("c1", succeeded("c1"))
    third = store.begin("c1")
    storage.close()

    assert first.state is BeginState.NEW
    assert second.state is BeginState.IN_PROGRESS
    assert third.state is BeginState.DONE
    assert third.result == succeeded("c1")


def test_state_survives_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    storage, store = open_store(tmp_path / "db.sqlite", clock)
    store.begin("done", body("done"), "k1")
    store.finish("done", succeeded("done"))
    store.begin("open", body("open"), "k1", ReplyTo("cabinets/x/reply", b"\x01\x02"))
    storage.close()

    storage, store = open_store(tmp_path / "db.sqlite", clock)
    done = store.begin("done")
    pending = store.in_progress()
    storage.close()

    assert done.state is BeginState.DONE
    assert [command.command_id for command in pending] == ["open"]
    assert pending[0].body == body("open")
    assert pending[0].unlock_token == unlock_token_for("open")
    assert pending[0].reply == ReplyTo("cabinets/x/reply", b"\x01\x02")


def test_finish_twice_raises(tmp_path: Path) -> None:
    storage, store = open_store(tmp_path / "db.sqlite", ManualClock())
    store.begin("c1")
    store.finish("c1", succeeded("c1"))
    with pytest.raises(ValueError, match="already has a final result"):
        store.finish("c1", succeeded("c1"))
    with pytest.raises(UnknownCommandError):
        store.finish("never", succeeded("never"))
    storage.close()


def test_prune_keeps_recent_and_open(tmp_path: Path) -> None:
    clock = ManualClock()
    storage, store = open_store(
        tmp_path / "db.sqlite", clock, retention_s=3600.0, max_lifetime_s=60.0
    )
    store.begin("old")
    store.finish("old", succeeded("old"))
    store.begin("open")
    clock.advance(3601.0)
    store.begin("recent")
    store.finish("recent", succeeded("recent"))
    deleted = store.prune()
    states = {name: store.begin(name).state for name in ("old", "open", "recent")}
    storage.close()

    assert deleted == 1
    assert states == {
        "old": BeginState.NEW,
        "open": BeginState.IN_PROGRESS,
        "recent": BeginState.DONE,
    }


def test_prune_by_count_spares_young_results(tmp_path: Path) -> None:
    clock = ManualClock()
    storage, store = open_store(
        tmp_path / "db.sqlite", clock, max_stored=100, max_lifetime_s=60.0, retention_s=7200.0
    )
    for index in range(150):
        store.begin(f"c{index}")
        store.finish(f"c{index}", succeeded(f"c{index}"))
    young = store.prune()
    clock.advance(121.0)
    aged = store.prune()
    storage.close()

    assert young == 0
    assert aged == 50


def test_unlock_token_is_stable_and_nonzero() -> None:
    tokens = {unlock_token_for(f"cmd-{index}") for index in range(2000)}

    assert unlock_token_for("cmd-1") == unlock_token_for("cmd-1")
    assert 0 not in tokens
    assert all(token < 2**32 for token in tokens)
    assert len(tokens) == 2000


def test_finish_with_create_records_rejection(tmp_path: Path) -> None:
    storage, store = open_store(tmp_path / "db.sqlite", ManualClock())
    before = store.lookup("rej-1")
    rejected = CommandResult(command_id="rej-1", command="eject", status=CommandStatus.REJECTED)
    store.finish("rej-1", rejected, create=True)
    after = store.lookup("rej-1")
    pending = store.in_progress()
    storage.close()

    assert before is None
    assert after is not None
    assert after.state is BeginState.DONE
    assert after.result == rejected
    assert pending == []
