"""Every import points down the floors (STYLE.md, "Floors"):

    schemas/ (contracts) → infra/ (ground) → producers/, streams/, projections/, alembic/ (pipeline)
    → simulation/ (the pipeline in virtual time) → reconguard/ (entry points)

A module may import its own package, third-party packages and the floors below its own; the
three pipeline packages do not import one another. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOOR = {"schemas": 0, "infra": 1, "producers": 2, "streams": 2, "projections": 2, "alembic": 2, "simulation": 3,
         "reconguard": 4}
PROJECT = set(FLOOR)


def _modules_imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _violations(package: str, root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for module in _modules_imported(path):
            top = module.split(".")[0]
            # "alembic" is the library's name too; our alembic/ folder is scripts, never imported
            if top not in PROJECT or top in (package, "alembic"):
                continue
            if FLOOR[top] > FLOOR[package] or FLOOR[top] == FLOOR[package] == 2:
                found.append(f"{path.relative_to(root)} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FLOOR))
def test_imports_point_down(package):
    assert _violations(package) == []


@pytest.mark.parametrize("package, source, expected", [
    ("infra", "def f():\n    from reconguard.cli import app\n", "infra/bad.py imports reconguard.cli"),
    ("infra", "import streams.app\n", "infra/bad.py imports streams.app"),
    ("streams", "from producers.poller import loop\n", "streams/bad.py imports producers.poller"),
    ("projections", "from reconguard.api import app\n", "projections/bad.py imports reconguard.api"),
], ids=["ground imports entry point", "ground imports pipeline", "pipeline sideways", "pipeline imports entry"])
def test_the_check_sees_a_wrong_import(tmp_path, package, source, expected):
    (tmp_path / package).mkdir()
    (tmp_path / package / "bad.py").write_text(source)
    assert _violations(package, tmp_path) == [expected]
