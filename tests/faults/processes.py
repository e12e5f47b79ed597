"""The daemon as a real process: its TOML config, and a forker that starts and reaps it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
REPLY_TIMEOUT_S = 20.0


def toml_text(data: Mapping[str, Any]) -> str:
    """Render nested dicts, lists of dicts and scalars as TOML (enough for the daemon config)."""
    lines: list[str] = []
    _write_table(lines, [], data)
    return "\n".join(lines) + "\n"


def _write_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and isinstance(value[0], Mapping)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in nested:
        name = ".".join(_key(part) for part in [*path, key])
        if isinstance(value, Mapping):
            lines.append(f"[{name}]")
            _write_table(lines, [*path, key], value)
        else:
            for item in value:
                lines.append(f"[[{name}]]")
                _write_table(lines, [*path, key], item)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _scalar(key)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


class DaemonForker:
    """Starts `cabinet-gateway run --config FILE` children by forking a pre-imported process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.children: set[int] = set()

    @classmethod
    async def start(cls) -> DaemonForker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.faults.daemon_forker",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return cls(process)

    async def _request(self, line: str) -> list[str]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(line.encode() + b"\n")
        await self._process.stdin.drain()
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            reply = await self._process.stdout.readline()
        if not reply:
            raise AssertionError(f"daemon forker exited with {await self._process.wait()}")
        return reply.decode().split()

    async def spawn(self, config: Path, log: Path) -> int:
        """Start one daemon process and return its pid."""
        words = await self._request(f"spawn {config} {log}")
        pid = int(words[1])
        self.children.add(pid)
        return pid

    async def reap(self, pid: int) -> int:
        """Wait for a child to exit; return its exit code, negative for a signal."""
        words = await self._request(f"reap {pid}")
        self.children.discard(pid)
        return int(words[2])

    async def kill(self, pid: int) -> int:
        os.kill(pid, signal.SIGKILL)
        return await self.reap(pid)

    async def terminate(self, pid: int) -> int:
        os.kill(pid, signal.SIGTERM)
        return await self.reap(pid)

    async def close(self) -> None:
        for pid in list(self.children):
            await self.kill(pid)
        assert self._process.stdin is not None
        self._process.stdin.write(b"quit\n")
        await self._process.stdin.drain()
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await self._process.wait()
