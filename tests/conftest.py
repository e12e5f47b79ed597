"""Project-wide test options."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# No per-example deadline: a loaded two-core CI machine must not turn slowness into failures.
# The default run (CI) draws the same examples every time. A rare example therefore cannot
# fail one run and pass the next. `--long` draws new ones.
settings.register_profile("default", deadline=None, derandomize=True)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=10_000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="also run the long soak and fuzz variants marked slow",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        settings.load_profile("long")
        return
    skip_slow = pytest.mark.skip(reason="long variant: run with --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
