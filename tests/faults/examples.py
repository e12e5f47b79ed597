"""Drawing many hypothesis examples up front, for fuzz runs against one running system.

Starting the daemon or a bridge once per example would cost seconds each, so the examples
are drawn first (generation only, no shrinking) and then fed to one running system.
The count follows the hypothesis profile: a few hundred by default, 10,000 with --long.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import Phase, given, settings
from hypothesis import seed as seed_hypothesis
from hypothesis import strategies as st

T = TypeVar("T")


def draw_examples(strategy: st.SearchStrategy[T], count: int, seed: int) -> list[T]:
    """Return `count` examples of `strategy`, reproducible for a given seed."""
    drawn: list[T] = []

    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None)
    @given(strategy)
    def collect(example: T) -> None:
        drawn.append(example)

    seed_hypothesis(seed)(collect)()
    return drawn


def example_count(default: int, long: int) -> int:
    """`long` when the hypothesis profile of --long is loaded, else `default`."""
    current = settings.default
    return long if current is not None and current.max_examples >= 10_000 else default
