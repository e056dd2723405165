"""The README's five-minute tour runs as written against real processes.

The tour itself runs in the package fixture ``tour`` (tests/docs/conftest.py), once, so the
guides' tests reuse its fleet; its tables are in :mod:`tests.docs.readme`. A command that
fails or does not show what the README says fails here, with its output and the servers' logs.
"""

from __future__ import annotations

import re

import onnx

from tests.docs.readme import README_TABLE, tour_blocks
from tests.docs.tour import Tour


def test_every_tour_command_has_a_check_and_every_placeholder_a_source():
    """Static: every command of the tour is known to the test, so none is silently skipped."""
    blocks = tour_blocks()
    commands = [c for b in blocks if b.lang == "sh" for c in b.commands()]
    assert commands, "the README's tour has no sh blocks"
    for command in commands:
        if not README_TABLE.skipped(command):
            README_TABLE.expectation(command.text)  # raises for a command without a check
    for row in README_TABLE.placeholders:
        assert any(row.text in c.text and re.search(row.where, c.text) for c in commands), row
    assert {b.file_name for b in blocks} >= {"policy.yaml", "fleet.yaml", None}
    assert any(b.lang == "python" for b in blocks)


def test_readme_tour_runs_as_written(tour: Tour):
    ran = [r.command for r in tour.results]
    assert any(c.startswith("modelfleet fl status") for c in ran), "the tour ran to its end"
    exported = onnx.load(str(tour.shell.cwd / "machine-health.onnx"))
    assert [i.name for i in exported.graph.input] == ["X"], "step 5 sends X"
