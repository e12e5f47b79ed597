"""Command line: `python -m bench NAME [--quick]`; the last line printed is the JSON result."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import cast

from bench.result import BenchResult, report

BENCHMARKS = ("scan", "command", "outbox", "drain", "uplink", "footprint")

Runner = Callable[[bool], tuple[BenchResult, list[str]]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=BENCHMARKS, help="benchmark to run")
    parser.add_argument(
        "--quick", action="store_true", help="smaller run that finishes in under 60 s"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level of the components, to stderr"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)

    module = importlib.import_module(f"bench.{args.name}")
    run = cast(Runner, module.run)
    result, summary = run(args.quick)
    report(result, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
