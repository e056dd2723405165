"""docs/cli.md keeps up with the command line: its command table names every command
``modelfleet --help`` lists (and none it does not), and each example in its ``sh`` blocks is
one that the named command's own ``--help`` shows, word for word (line continuations
joined, spaces collapsed), so the page cannot drift from the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from modelfleet.cli.main import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _subcommands(command: Any) -> dict[str, Any]:
    """A group's commands by name; {} for a leaf (typer's groups carry ``commands``)."""
    found = getattr(command, "commands", None)
    return dict(found) if isinstance(found, dict) else {}


def _root() -> Any:
    return typer.main.get_command(app)


def _section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _joined(text: str) -> str:
    """Continuation lines joined and whitespace collapsed: ``a \\\\\\n    b`` -> ``a b``."""
    return re.sub(r"\s+", " ", re.sub(r"\s*\\\n\s*", " ", text)).strip()


def _examples(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    lines = [line for block in blocks for line in _joined_lines(block)]
    return [line for line in lines if line.startswith("modelfleet ")]


def _joined_lines(block: str) -> list[str]:
    return [re.sub(r"\s+", " ", line).strip() for line in re.sub(r"\\\n\s*", "", block).split("\n")]


def _command_path(example: str, root: Any) -> list[str]:
    """The (sub)command an example runs: its leading words that name commands."""
    path: list[str] = []
    command = root
    for word in example.split()[1:]:
        subs = _subcommands(command)
        if word not in subs:
            break
        path.append(word)
        command = subs[word]
    return path


def test_the_command_table_names_every_command_and_no_other() -> None:
    table = _section(DOCS.read_text(encoding="utf-8"), "Commands")
    named = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([a-z-]+)`", row.split("|")[1])
    }
    listed = set(_subcommands(_root()))
    assert sorted(listed - named) == [], "commands missing from docs/cli.md's table"
    assert sorted(named - listed) == [], "docs/cli.md's table names commands that do not exist"


def test_every_example_is_the_one_its_help_shows() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = _section(text, "Events, automation, evaluations and labels")
    examples = _examples(section)
    assert len(examples) >= 10, examples
    root = _root()
    for example in examples:
        path = _command_path(example, root)
        assert path, f"no such command: {example}"
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert shown.exit_code == 0, shown.output
        assert example in _joined(shown.output), (
            f"`{' '.join(path)} --help` does not show this example: {example}"
        )
