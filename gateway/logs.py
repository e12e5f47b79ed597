"""Log setup: journald-friendly lines on stderr, and a small buffer for support bundles."""

from __future__ import annotations

import logging
import os
import sys
from collections import deque

SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """Prefix each line with its syslog priority as `<N>`, which journald reads from stderr.

    journald adds its own timestamp, so the line carries none.
    """

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


class RecentLines(logging.Handler):
    """The last lines logged, for the support bundle."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.handleError(record)


def setup_logging(level: str) -> RecentLines:
    """Configure the root logger for the daemon and return the bundle buffer."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        stream.setFormatter(JournalFormatter("%(message)s"))
    else:
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(stream)
    recent = RecentLines()
    root.addHandler(recent)
    # Third-party loggers that are chatty at DEBUG stay at WARNING unless asked for.
    for name in ("amqtt", "transitions", "aiosqlite"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return recent
