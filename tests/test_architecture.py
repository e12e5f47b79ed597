"""Import rules between the layers, as stated in docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OURS = {"protocol", "firmware_bridge", "cloud_link", "cabinet_sim", "gateway"}

ALLOWED: dict[str, set[str]] = {
    "protocol": {"protocol"},
    "cabinet_sim": {"protocol", "cabinet_sim"},
    "firmware_bridge": {"protocol", "firmware_bridge"},
    "cloud_link": {"protocol", "cloud_link"},
    "gateway": OURS,
}

# The codec stays pure: no I/O, no event loop, no threads.
PROTOCOL_FORBIDDEN = {
    "asyncio",
    "socket",
    "serial",
    "sqlite3",
    "subprocess",
    "threading",
    "select",
    "selectors",
}


def imported_packages(source: str) -> set[str]:
    """Return the top-level names of every module `source` imports, relative imports excluded."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def package_imports(package: str) -> dict[Path, set[str]]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no Python files"
    return {path: imported_packages(path.read_text(encoding="utf-8")) for path in files}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_follow_rules(package: str) -> None:
    for path, names in package_imports(package).items():
        forbidden = (names & OURS) - ALLOWED[package]
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_protocol_does_no_io() -> None:
    for path, names in package_imports("protocol").items():
        assert not names & PROTOCOL_FORBIDDEN, (
            f"{path.relative_to(ROOT)}: {names & PROTOCOL_FORBIDDEN}"
        )


def test_relative_imports_not_used() -> None:
    # Relative imports would slip past the rules above, so the project does not use them.
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
            assert not relative, f"{path.relative_to(ROOT)} uses a relative import"


def test_rule_checker_detects_violation() -> None:
    source = "import json\nfrom cloud_link.outbox import Outbox\nimport firmware_bridge.link\n"
    assert imported_packages(source) == {"json", "cloud_link", "firmware_bridge"}
