"""The fenced blocks of a Markdown page, as a reader would copy them.

The docs tests run what the README and the guides show, so the parsing is deliberately the
reader's: a fenced block is a unit (a ``sh`` block is a list of shell commands, a ``python``
block one script, a ``yaml`` block whose first line is ``# NAME.yaml...`` the file of that
name), backslash-continued lines are one command, and a ``#`` comment ends at the line's end
unless it is inside quotes (as in a shell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[A-Za-z0-9_-]*)\s*$")
_FILE_HEADER = re.compile(r"^#\s*(?P<name>[\w.-]+\.(?:ya?ml|json|csv))\b")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language tag (``""`` for none), text and 1-based first line."""

    lang: str
    text: str
    line: int
    section: str

    @property
    def file_name(self) -> str | None:
        """``policy.yaml`` for a block whose first line is ``# policy.yaml: ...``."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_HEADER.match(first)
        return match.group("name") if match else None

    def commands(self) -> list[Command]:
        """The block's shell commands: continuations joined, comments and blank lines gone."""
        out: list[Command] = []
        pending = ""
        start = self.line
        for offset, raw in enumerate(self.text.split("\n")):
            if not pending:
                start = self.line + offset
            line = raw.rstrip()
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            text = strip_comment(pending + line).strip()
            pending = ""
            if text:
                out.append(Command(text, start))
        return out


@dataclass(frozen=True)
class Command:
    """One command line as a user would type it, and the page line it starts on."""

    text: str
    line: int


def strip_comment(line: str) -> str:
    """``line`` without its trailing shell comment (a ``#`` after a blank, outside quotes)."""
    quote: str | None = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` in page order, with the heading it sits under."""
    blocks: list[Block] = []
    section = ""
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        indent = len(fence.group("indent"))
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        blocks.append(Block(fence.group("lang"), "\n".join(body), i - len(body) + 1, section))
        i += 1
    return blocks


def indented_commands(path: Path) -> list[Command]:
    """Commands in indented (4-space) code outside fences: the docs tests cannot see those
    as blocks, so a page that has any fails their check (a fenced block is what runs)."""
    found: list[Command] = []
    inside = False
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if _FENCE.match(line) or (inside and line.strip() == "```"):
            inside = not inside
        elif not inside and re.match(r"^ {4,}(modelfleet|curl) ", line):
            found.append(Command(line.strip(), number))
    return found


def section_blocks(path: Path, first: str, last: str) -> list[Block]:
    """The blocks from the heading that starts with ``first`` up to the next heading (after
    it) that starts with ``last``, or to the end of the page."""
    headings = [
        (number, line.lstrip("#").strip())
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1)
        if line.startswith("#")
    ]
    begin = next(n for n, title in headings if title.startswith(first))
    end = next((n for n, title in headings if n > begin and title.startswith(last)), None)
    return [b for b in fenced_blocks(path) if b.line > begin and (end is None or b.line < end)]
