"""Running a page's blocks in a :class:`~tests.docs.shell.Shell`, and checking each output.

A page comes with a :class:`Table`: what each of its commands shows (:class:`Expect`), the
values a reader copies from an earlier output (:class:`Placeholder`), and the lines that
cannot run here with the reason (``not_run``). A command no :class:`Expect` row matches fails
the test, so a new line on a page needs its check.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from modelfleet.sim.launcher import PortReservation
from tests.docs.blocks import Block, Command
from tests.docs.shell import Result, Shell

SERVER = re.compile(r"^modelfleet (hub|site|gateway) serve\b")


@dataclass(frozen=True)
class Placeholder:
    """``text`` in a command matching ``where`` is the value ``value`` finds in the output of
    the latest earlier command matching ``source`` (what the page tells the reader to copy)."""

    text: str
    where: str
    source: str
    value: str


@dataclass(frozen=True)
class Expect:
    """What a command matching ``command`` shows: every pattern of ``shows`` in its output.

    ``until``: the output depends on something asynchronous (a site coming online, telemetry
    arriving), so the command is run again until it shows it, as a reader would.
    ``watch``: a ``--watch`` that redraws until stopped; read until it shows it.
    ``code``: the exit code the page announces (1 for a refusal it shows on purpose).
    """

    command: str
    shows: tuple[str, ...] = ()
    until: bool = False
    watch: bool = False
    code: int = 0


@dataclass(frozen=True)
class Table:
    """Everything a docs test knows about one page's commands."""

    expect: tuple[Expect, ...]
    placeholders: tuple[Placeholder, ...] = ()
    #: Line prefix -> why that line is not run.
    not_run: dict[str, str] = field(default_factory=dict)

    def expectation(self, command: str) -> Expect:
        for row in self.expect:
            if re.search(row.command, command):
                return row
        if SERVER.match(command):
            return Expect(command)
        raise AssertionError(f"no check in the docs test's table for the command: {command}")

    def skipped(self, command: Command) -> bool:
        return any(command.text.startswith(prefix) for prefix in self.not_run)


def shows(text: str, patterns: tuple[str, ...]) -> bool:
    return all(re.search(p, text, re.MULTILINE) for p in patterns)


class Tour:
    """A reader going through pages in one shell: every result so far, the reserved ports."""

    def __init__(self, shell: Shell, ports: tuple[int, ...]) -> None:
        self.shell = shell
        self.results: list[Result] = []
        self.ports = {port: PortReservation() for port in ports}
        self.started = time.monotonic()

    def run_blocks(self, blocks: list[Block], table: Table, *, script_prefix: str) -> None:
        """Every block in order: files written, scripts and commands run and checked."""
        for block in blocks:
            if block.file_name is not None:
                (self.shell.cwd / block.file_name).write_text(block.text + "\n", encoding="utf-8")
            elif block.lang == "python":
                name = f"{script_prefix}-{block.section.split('.')[0]}.py"
                result = self.shell.python(block.text, name)
                self.check(result, table.expectation(result.command))
            elif block.lang in ("sh", "bash", ""):
                for command in block.commands():
                    if not table.skipped(command):
                        self.run(command.text, table)
            else:
                raise AssertionError(f"line {block.line}: a {block.lang!r} block with no file name")

    def substitute(self, command: str, table: Table) -> str:
        for page_port, reservation in self.ports.items():
            command = re.sub(rf"\b{page_port}\b", str(reservation.port), command)
        for row in table.placeholders:
            if row.text in command and re.search(row.where, command):
                command = command.replace(row.text, self.copied(row))
        return command

    def copied(self, row: Placeholder) -> str:
        for result in reversed(self.results):
            if re.search(row.source, result.command):
                found = re.findall(row.value, result.output)
                assert found, f"{row.text}: nothing like {row.value} in\n{result.describe()}"
                return str(found[0])
        raise AssertionError(f"{row.text}: no earlier command like {row.source!r}")

    def run(self, page_command: str, table: Table) -> None:
        command = self.substitute(page_command, table)
        expect = table.expectation(page_command)
        if SERVER.match(command):
            self.shell.start(command)
            return
        if expect.watch:
            result = self.shell.watch(command, lambda screen: shows(screen, expect.shows))
        elif expect.until:
            result = self.until(command, expect)
        else:
            result = self.shell.run(command)
        self.check(result, expect)

    def until(self, command: str, expect: Expect, timeout: float = 60.0) -> Result:
        """Run ``command`` again (as a reader would) until it shows what ``expect`` says."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.shell.run(command)
            done = result.code != expect.code or shows(result.output, expect.shows)
            if done or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def check(self, result: Result, expect: Expect) -> None:
        self.results.append(result)
        with (self.shell.cwd / "transcript.txt").open("a", encoding="utf-8") as transcript:
            transcript.write(f"{result.describe()}\n[{time.monotonic() - self.started:.1f}s]\n")
        logs = "\n".join(f"--- {s.command}\n{s.log_text()[-3000:]}" for s in self.shell.servers)
        assert result.code == expect.code, f"{result.describe()}\nserver logs:\n{logs}"
        missing = [p for p in expect.shows if not re.search(p, result.output, re.MULTILINE)]
        assert not missing, f"output lacks {missing}:\n{result.describe()}"
