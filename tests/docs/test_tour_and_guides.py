"""The README's five-minute tour, then the user guides' blocks, run as written against real
processes.

The tour runs in the package fixture ``tour`` (tests/docs/conftest.py), once; its tables are
in :mod:`tests.docs.readme`. A command that fails or does not show what the README says fails
here, with its output and the servers' logs. Every test of the tour's fleet lives in this one
file: ``make test`` hands each file to one pytest-xdist worker, so a second file would make
a second fleet on the other worker.

The guides' blocks run on the fleet the README's tour left.

Command blocks run in the tour's shell (its directory, environment, hub, sites and gateway);
YAML blocks, which show files a reader writes, are read by the parser the product reads them
with (:data:`FILES`), so a renamed or removed field fails here. Every block of a covered guide
is either run, validated, or listed in :data:`NOT_RUN` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from modelfleet.federation.jobs import JobConfig
from modelfleet.hub.gitops import parse_fleet
from modelfleet.hub.policy import parse_policy_document
from modelfleet.site.cascade import Cascade
from modelfleet.site.federated import SiteConfig
from modelfleet.site.policy import load_site_policy
from tests.docs.blocks import Block, fenced_blocks, indented_commands
from tests.docs.readme import README_TABLE, ROOT, tour_blocks
from tests.docs.tour import Expect, Table, Tour

DOCS = ROOT / "docs"

#: The guides this test covers (monitoring.md holds no command block).
GUIDES = ("deployments.md", "federated.md", "routing.md", "monitoring.md", "security.md")

#: Line prefix -> why the line does not run here.
NOT_RUN = {
    # federated.md
    "modelfleet fl start --model digits@production": "needs sites holding the `digits` data set "
    "(the tour's sites hold `maintenance`); the README tour starts and follows a job on them",
    "modelfleet fl start -f job.yaml": "the same job from job.yaml (validated below)",
    "modelfleet fl status fl-1a2b3c4d --watch": "follows the digits job above",
    "modelfleet fl abort fl-1a2b3c4d": "aborts the digits job above",
    "modelfleet fl status digits-2025-06": "a personalized digits job on a site named plant-b",
    "modelfleet pin plant-b digits:7": "pins that job's variant",
    # routing.md
    "modelfleet sim wan --listen": "synopsis of the WAN emulator; tests/sim run it",
    "kill -USR1 <pid>": "signals the emulator above",
}

#: Python blocks that run, told by their first line: scripts, and a trainer sketch that must
#: at least define.
RUN_PYTHON = ("import asyncio, os", "class ")

#: Python blocks that are API sketches, not scripts (their first line, and why).
PYTHON_NOT_RUN = {
    "if self.cascade is not None": "an excerpt of site/server.py, shown where the cascade hooks in",
    "with WanLink((": "the emulator's API; tests/sim/ exercise it",
}

GUIDE_EXPECT = (
    Expect(
        r"^modelfleet deploy machine-health@production .*--plan",
        (r"plant-eu-west", r"plant-us-east", r"(?i)accept"),
    ),
    Expect(r"^modelfleet rollout ls", (r"\br-[0-9a-f]{6,}", r"(?i)succeeded")),
    Expect(r"^modelfleet deployments", (r"machine-", r"jurisdiction", r"r-[0-9a-f]{6,}")),
    Expect(r"^modelfleet pin plant-eu-west", (r"plant-eu-west", r"machine-health pinned")),
    Expect(r"^modelfleet unpin plant-eu-west", (r"plant-eu-west",)),
    Expect(r"^modelfleet policy ls", (r"plant-data-stays-in-eu-us",)),
    Expect(r"^modelfleet apply -f fleet\.yaml --dry-run", (r"no changes",)),
    Expect(r"^modelfleet fl init digits", (r"digits:1",)),
    Expect(r"^modelfleet fl init pump-mlp", (r"pump-mlp:1",)),
    Expect(r"^modelfleet fl ls", (r"tour-1",)),
    Expect(r"^modelfleet hub cert issue .*--name eu-gw", (r"modelfleet://gateway/eu-gw",)),
    Expect(r"^curl .*/v2/models/machine-health/infer", (r'"model_name"\s*:\s*"machine-health"',)),
    Expect(r"^curl .*/v2/health/ready", (r"^200$",)),
    Expect(r"^modelfleet hub cert issue .*--name edge-gw", (r"modelfleet://gateway/edge-gw",)),
    Expect(r"^python federated-\d+\.py", ()),
    Expect(r"^python routing-\d+\.py", (r"^plant-eu-west 1 \[", r"^\[")),
    Expect(r"^modelfleet fl simulate", (r"TEST ACC", r"^\W*30\b")),
)

GUIDE_TABLE = Table(GUIDE_EXPECT, (), NOT_RUN)


def _cascade(text: str, _: Path) -> object:
    doc = yaml.safe_load(text)
    return Cascade.from_config(doc, registry=CollectorRegistry())


def _site_policy(text: str, tmp: Path) -> object:
    path = tmp / "site-policy.yaml"
    path.write_text(text, encoding="utf-8")
    return load_site_policy(path)


def _site_config(text: str, tmp: Path) -> object:
    path = tmp / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return SiteConfig.load(path)


#: How the product reads each kind of file a guide shows, told apart by its top-level keys.
FILES: tuple[tuple[str, frozenset[str], Callable[[str, Path], object]], ...] = (
    ("policy file", frozenset({"policies"}), lambda t, _: parse_policy_document(yaml.safe_load(t))),
    (
        "fleet file",
        frozenset({"sites", "deployments"}),
        lambda t, _: parse_fleet(yaml.safe_load(t)),
    ),
    ("site policy", frozenset({"jurisdiction", "accepted_training_regions"}), _site_policy),
    ("site config", frozenset({"datasets", "federation"}), _site_config),
    ("job file", frozenset({"model", "rounds"}), lambda t, _: JobConfig.parse(yaml.safe_load(t))),
    ("cascade file", frozenset({"target", "models"}), _cascade),
)


def _guide_blocks(name: str) -> list[Block]:
    return fenced_blocks(DOCS / name)


def _yaml_kind(block: Block) -> tuple[str, Callable[[str, Path], object]]:
    keys = set(yaml.safe_load(block.text) or {})
    for kind, needed, read in FILES:
        if needed <= keys:
            return kind, read
    raise AssertionError(f"{block.section}: a YAML block the test cannot read: keys {keys}")


def _is_command_block(block: Block) -> bool:
    """A block of commands: tagged sh/bash, or untagged and starting with a command."""
    if block.lang in ("sh", "bash"):
        return True
    return block.lang == "" and re.search(r"^(modelfleet|curl|kill) ", block.text, re.M) is not None


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_yaml_blocks_are_what_the_product_reads(guide: str, tmp_path: Path):
    for block in _guide_blocks(guide):
        if block.lang == "yaml":
            kind, read = _yaml_kind(block)
            try:
                read(block.text, tmp_path)
            except Exception as exc:  # any refusal is the finding: name the block
                raise AssertionError(f"{guide} line {block.line} ({kind}): {exc}") from exc


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_blocks_are_all_run_checked_or_listed(guide: str):
    """Static: every block of a guide is known to the test, so none is silently skipped."""
    assert not indented_commands(DOCS / guide), "commands outside a fenced block"
    for block in _guide_blocks(guide):
        if block.lang == "yaml":
            _yaml_kind(block)
        elif block.lang == "python":
            first = block.text.lstrip().split("\n", 1)[0]
            ran = first.startswith(RUN_PYTHON)
            listed = any(first.startswith(p) for p in PYTHON_NOT_RUN)
            assert ran or listed, f"{guide} line {block.line}: python block not covered"
        elif _is_command_block(block):
            for command in block.commands():
                if not GUIDE_TABLE.skipped(command):
                    GUIDE_TABLE.expectation(command.text)
        else:
            # Diagrams and output excerpts: not commands, nothing to run.
            assert not re.search(r"^\s*modelfleet ", block.text, re.MULTILINE), (
                f"{guide} line {block.line}: commands in a block the test does not run"
            )


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_commands_run_on_the_tour_fleet(guide: str, tour: Tour):
    blocks = [b for b in _guide_blocks(guide) if _is_command_block(b)]
    tour.run_blocks(blocks, GUIDE_TABLE, script_prefix=guide.removesuffix(".md"))
    for block in _guide_blocks(guide):
        if block.lang == "python" and block.text.lstrip().startswith(RUN_PYTHON):
            name = f"{guide.removesuffix('.md')}-{block.line}.py"
            result = tour.shell.python(block.text, name)
            tour.check(result, GUIDE_TABLE.expectation(result.command))


# --------------------------------------------------------------------------- the README tour


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
