"""Every named crash point is placed in the code, killed at by a test, and in the table of
``docs/reliability.md`` — and the table names no point that does not exist.

Read from the source with :mod:`ast` (calls of ``crash_point("<name>")`` in
``src/modelfleet``, and the point's name as a string constant in ``tests/faults/test_*.py``),
so a point whose call was deleted, or whose test was, fails here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import modelfleet
from modelfleet.crashpoints import CRASH_POINTS

SRC = Path(modelfleet.__file__).parent
ROOT = SRC.parent.parent
DOC = ROOT / "docs" / "reliability.md"
FAULT_TESTS = ROOT / "tests" / "faults"


def _strings(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _placed() -> dict[str, list[str]]:
    """Point name -> the modules that call ``crash_point`` with it."""
    placed: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name == "crash_point" and isinstance(first, ast.Constant):
                placed.setdefault(str(first.value), []).append(path.name)
    return placed


def test_every_crash_point_is_placed_once_in_the_code() -> None:
    placed = _placed()
    assert sorted(placed) == sorted(CRASH_POINTS), "placed vs declared differ"
    twice = {name: where for name, where in placed.items() if len(where) > 1}
    assert not twice, f"a point must name one window: {twice}"


def test_every_crash_point_has_a_sigkill_test() -> None:
    named: set[str] = set()
    for path in FAULT_TESTS.glob("test_*.py"):
        named.update(_strings(ast.parse(path.read_text(), str(path))))
    missing = sorted(set(CRASH_POINTS) - named)
    assert not missing, f"no test in tests/faults kills at: {missing}"


def test_the_reliability_table_lists_exactly_the_crash_points() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \|", DOC.read_text(), re.M))
    assert documented == set(CRASH_POINTS), (
        f"undocumented: {sorted(set(CRASH_POINTS) - documented)}; "
        f"no such point: {sorted(documented - set(CRASH_POINTS))}"
    )
