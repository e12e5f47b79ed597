"""Daemon lifecycle: one instance per state directory, systemd notifications, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from cloud_link.commands import EjectCommand
from gateway.daemon import Daemon, InstanceLockedError
from tests.gateway.rig import WAIT_S, running_rig
from tests.support.mosquitto import MosquittoBroker


async def test_second_instance_refused(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        second = Daemon(rig.config())
        with pytest.raises(InstanceLockedError, match=str(os.getpid())):
            await second.run()


async def test_systemd_notifications(
    mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    loop = asyncio.get_running_loop()
    received: list[str] = []

    async def wait_message(prefix: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not any(m.startswith(prefix) for m in received):
                received.append((await loop.sock_recv(receiver, 4096)).decode())

    try:
        async with running_rig(mosquitto, tmp_path) as rig:
            await wait_message("READY=1")
            await wait_message("WATCHDOG=1")
            await rig.stop_daemon()
            await wait_message("STOPPING=1")
    finally:
        receiver.close()
    assert any("STATUS=cabinet" in m for m in received)


async def test_sigterm_lets_running_eject_finish(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        daemon = rig.daemon
        assert daemon is not None
        assert rig.daemon_task is not None
        slot = next(s.slot for s in daemon.bridge.snapshot().slots if s.rentable)
        command_id = await rig.cloud.send(EjectCommand(slot=slot))
        async with asyncio.timeout(WAIT_S):
            await daemon.feed.wait_for(lambda: daemon.runner.running_ejects > 0)

        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(rig.daemon_task, WAIT_S)
        rig.daemon = rig.daemon_task = None

        result = await rig.inbox.wait_for("command_result", lambda r: r.command_id == command_id)
        assert result.eject.outcome == "not_taken"
        await rig.inbox.wait_status('"reason":"shutdown"')


async def test_sigterm_waits_for_maintenance_eject(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with running_rig(mosquitto, tmp_path) as rig:
        daemon = rig.daemon
        assert daemon is not None
        assert rig.daemon_task is not None
        slot = next(s.slot for s in daemon.bridge.snapshot().slots if s.bank_id)
        eject = asyncio.create_task(daemon.service.maintenance_eject(slot, "test", "tech-1"))
        async with asyncio.timeout(WAIT_S):
            await daemon.feed.wait_for(lambda: daemon.runner.running_ejects > 0)

        os.kill(os.getpid(), signal.SIGTERM)
        reply = await asyncio.wait_for(eject, WAIT_S)
        await asyncio.wait_for(rig.daemon_task, WAIT_S)
        rig.daemon = rig.daemon_task = None

        assert reply.outcome == "not_taken"
        audit = await rig.inbox.wait_for("security", lambda e: e.event == "maintenance_eject")
        assert audit.slot == slot
