"""federation/ is transport-free: it imports nothing from the hub, the site or routing.

Read from the source (every import statement, also those inside functions), so a lazy
import cannot slip past. The hub's coordinator role lives in ``hub/federation/``; the
runtime there and on sites must not depend on the simulation either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import modelfleet

PACKAGE = Path(modelfleet.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def importers(folder: str, *forbidden: str) -> dict[str, list[str]]:
    """Modules under ``folder`` importing any of ``forbidden`` (or below), with what."""
    out: dict[str, list[str]] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        bad = sorted(
            name
            for name in imported_modules(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        if bad:
            out[str(path.relative_to(PACKAGE))] = bad
    return out


def test_federation_imports_nothing_from_hub_site_or_routing() -> None:
    assert importers("federation", "modelfleet.hub", "modelfleet.site", "modelfleet.routing") == {}


def test_the_runtime_does_not_import_the_simulation() -> None:
    simulation = "modelfleet.federation.simulation"
    assert importers("hub", simulation) == {}
    assert importers("site", simulation) == {}
    assert importers("federation", simulation) == {}
