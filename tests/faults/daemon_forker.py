"""A process that imports the gateway once and forks `cabinet-gateway run --config` on request.

Importing the gateway takes seconds on a small machine; forking an already-imported process
makes each of the many kill -9 trials cost only the daemon's own start-up. The child runs the
real command-line entry point, so the daemon under test is the one systemd would start.

Protocol on stdin/stdout, one line each: `spawn CONFIG LOG` -> `pid N`; `reap N` -> `exit N
CODE` (CODE is negative for a signal); `quit` ends the forker.
"""

from __future__ import annotations

import os
import sys

import gateway.cli


def _run_child(config: str, log: str) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.argv = ["cabinet-gateway", "run", "--config", config]
    code = 0
    try:
        gateway.cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main() -> None:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "spawn":
            pid = os.fork()
            if pid == 0:
                _run_child(words[1], words[2])
            print(f"pid {pid}", flush=True)
        elif words[0] == "reap":
            pid = int(words[1])
            _, status = os.waitpid(pid, 0)
            print(f"exit {pid} {_exit_code(status)}", flush=True)
        elif words[0] == "quit":
            return


if __name__ == "__main__":
    main()
