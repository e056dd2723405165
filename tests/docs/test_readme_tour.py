"""The README's five-minute tour, run as written against real processes.

Every fenced block of the tour runs in page order in one directory and one environment, as a
reader would run them (:mod:`tests.docs.shell`): ``sh`` blocks command by command, ``python``
blocks as scripts, ``yaml`` blocks named by their first line (``# policy.yaml: ...``) written
to that file. What the test changes is listed here and nowhere else:

- :data:`PORTS`: the README's fixed ports become ports reserved for this test (other test
  sessions may run on the machine);
- :data:`PLACEHOLDERS`: the values a reader copies from an earlier output (a token, an id);
- :data:`NOT_RUN`: lines that cannot run here, with the reason;
- :data:`FASTER`: settings that only make asynchronous things happen sooner.

Each command's output is checked against :data:`EXPECT`, what the README says it shows; a
command no row matches fails the test, so a new line in the tour needs its check here.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from modelfleet.sim.launcher import PortReservation
from tests.docs.blocks import Block, Command, section_blocks
from tests.docs.shell import Result, Shell

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: The ports the README names, each replaced by a port reserved for the test.
PORTS = (8700, 8800, 8801, 8802, 8900)

#: Lines of the tour that are not run, and why.
NOT_RUN = {
    "python3 -m venv .venv": "installs modelfleet: the test runs in the venv `make test` made, "
    "with its bin/ first on PATH, as `source .venv/bin/activate` leaves it",
}

#: Settings that change no behaviour the README describes, only how soon it is seen: the
#: sites' telemetry windows (10 s by default) close every second.
FASTER = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "1",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
}

TOKEN = r"\bmf_[A-Za-z0-9_-]{20,}"
ENROLLMENT = r"\bmfe_[A-Za-z0-9_-]+@[A-Za-z0-9_-]+"


@dataclass(frozen=True)
class Placeholder:
    """``text`` in a command matching ``where`` is the value ``value`` finds in the output of
    the earlier command matching ``source`` (what the README tells the reader to copy)."""

    text: str
    where: str
    source: str
    value: str


PLACEHOLDERS = (
    Placeholder("mf_...", r"MODELFLEET_TOKEN=", r"^modelfleet hub init", TOKEN),
    Placeholder("mf_...", r"export INFER_TOKEN=", r"token create --role infer --name app", TOKEN),
    Placeholder("mf_...", r"GATEWAY_INFER_TOKEN=", r"token create .*--name edge-gw", TOKEN),
    Placeholder("mfe_...@...", r"eu-state", r"^modelfleet site add plant-eu-west", ENROLLMENT),
    Placeholder("mfe_...@...", r"us-state", r"^modelfleet site add plant-us-east", ENROLLMENT),
    Placeholder("mfe_...@...", r"ap-state", r"^modelfleet site add plant-ap-south", ENROLLMENT),
    Placeholder("<id>", r"rollout status", r"^modelfleet deploy (?!.*--plan)", r"\br-[0-9a-f]{6,}"),
    Placeholder("<id>", r"token revoke", r"--role operator --name ci", r"\btoken ([0-9a-f]{8,})\b"),
)


@dataclass(frozen=True)
class Expect:
    """What a command matching ``command`` shows: every pattern of ``shows`` in its output.

    ``until``: the output depends on something asynchronous (a site coming online, telemetry
    arriving), so the command is run again until it shows it, as a reader would.
    ``watch``: a ``--watch`` that redraws until stopped; read until it shows it.
    ``code``: the exit code the README announces (1 for a refusal it shows on purpose).
    """

    command: str
    shows: tuple[str, ...] = ()
    until: bool = False
    watch: bool = False
    code: int = 0


SITES = ("plant-eu-west", "plant-us-east", "plant-ap-south")

EXPECT = (
    Expect(r"^modelfleet hub init", (TOKEN, r"fingerprint sha256:")),
    Expect(r"^export "),
    # Names may be wrapped or shortened to fit a table: their first part is enough.
    Expect(
        r"^modelfleet status --watch",
        (r"plant-eu", r"plant-us", r"plant-ap", r"machine-health:1"),
        watch=True,
    ),
    Expect(r"^modelfleet status$", (r"fleet status", r"SITE")),
    Expect(r"^python script-2", ()),
    Expect(r"^modelfleet model push", (r"machine-health:1 @production", r"signed")),
    Expect(
        r"^modelfleet model ls ; modelfleet model show",
        (r"production", r"X:FP32\[\?,6\]", r"eu-west, us-east"),
    ),
    Expect(r"^modelfleet model pull", (r"m\.onnx .*verified",)),
    Expect(r"^modelfleet site add", (ENROLLMENT,)),
    Expect(r"^modelfleet site ls", tuple(rf"{s[:8]}.*\bonline\b" for s in SITES), until=True),
    Expect(r"^modelfleet policy apply", (r"plant-data-stays-in-eu-us",)),
    Expect(
        r"deploy .*--plan",
        (r"plant-ap-south", r"plant-data-stays-in-eu-us", r"jurisdiction=IN", r"would be refused"),
        code=1,
    ),
    Expect(r"^modelfleet deploy", (r"\br-[0-9a-f]{6,}",)),
    Expect(r"^modelfleet rollout status", (r"\bsucceeded\b", r"plant-eu-w", r"plant-us-e")),
    Expect(r"^modelfleet apply -f fleet\.yaml", (r"no changes",)),
    Expect(r"^modelfleet token create --role infer --name eu-pumps", (TOKEN, r"eu-pumps")),
    Expect(r"^modelfleet token create", (TOKEN,)),
    Expect(r"^python script-5", (r"^plant-eu-west \[",)),
    Expect(r"^modelfleet hub cert issue", (r"modelfleet://gateway/edge-gw", r"cert\.pem")),
    Expect(r"^curl ", (r'"name"\s*:\s*"label"', r'"model_name"\s*:\s*"machine-health"')),
    Expect(r"^modelfleet drift", (r"PSI", r"X\[0\]", r"plant-eu-west"), until=True),
    Expect(r"^modelfleet audit", (r"model\.push", r"deploy", r"site\.enroll")),
    Expect(r"^modelfleet fl init", (r"machine-health-fl",)),
    Expect(r"^modelfleet fl start", (r"tour-1",)),
    Expect(
        r"^modelfleet fl status",
        (r"\bcompleted\b", r"machine-health-fl:2", r"plant-ap-s.*refused", r"plant-us-e"),
    ),
    Expect(r"^modelfleet token ls ; modelfleet token revoke", (r"\bci\b", r"(?i)revoked")),
    Expect(r"^modelfleet hub token recover", (TOKEN,)),
)

SERVER = re.compile(r"^modelfleet (hub|site|gateway) serve\b")


def tour_blocks() -> list[Block]:
    return section_blocks(README, "Five-minute tour", "SDK")


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    """An empty directory and a fresh user's environment (no MODELFLEET_* settings)."""
    cwd = tmp_path_factory.mktemp("tour")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFLEET_", "SSL_CERT"))}
    env.update(FASTER)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(cwd / ".cache")
    env["COLUMNS"] = "100"
    shell = Shell(cwd, env)
    try:
        yield shell
    finally:
        shell.close()


class Tour:
    """The tour's state: every result so far, the reserved ports."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.results: list[Result] = []
        self.ports = {port: PortReservation() for port in PORTS}
        self.started = time.monotonic()

    def substitute(self, command: str) -> str:
        for readme_port, reservation in self.ports.items():
            command = re.sub(rf"\b{readme_port}\b", str(reservation.port), command)
        for row in PLACEHOLDERS:
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

    def run(self, readme_command: str) -> None:
        command = self.substitute(readme_command)
        expect = expectation(readme_command)
        if SERVER.match(command):
            self.shell.start(command)
            return
        if expect.watch:
            result = self.shell.watch(command, lambda screen: _shows(screen, expect.shows))
        elif expect.until:
            result = self.until(command, expect)
        else:
            result = self.shell.run(command)
        self.check(result, expect)

    def until(self, command: str, expect: Expect, timeout: float = 60.0) -> Result:
        deadline = time.monotonic() + timeout
        while True:
            result = self.shell.run(command)
            if result.code != expect.code or _shows(result.output, expect.shows):
                return result
            if time.monotonic() > deadline:
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


def expectation(command: str) -> Expect:
    for row in EXPECT:
        if re.search(row.command, command):
            return row
    if SERVER.match(command):
        return Expect(command)
    raise AssertionError(f"no check in EXPECT for the README's command: {command}")


def _shows(text: str, patterns: tuple[str, ...]) -> bool:
    return all(re.search(p, text, re.MULTILINE) for p in patterns)


def _not_run(command: Command) -> bool:
    return any(command.text.startswith(prefix) for prefix in NOT_RUN)


def test_every_tour_command_has_a_check_and_every_placeholder_a_source():
    """Static: the tour's commands are all known to the test, so none is silently skipped."""
    commands = [c for b in tour_blocks() if b.lang == "sh" for c in b.commands()]
    assert commands, "the README's tour has no sh blocks"
    for command in commands:
        if not _not_run(command):
            expectation(command.text)  # raises for a command without a check
    for text in {row.text for row in PLACEHOLDERS}:
        assert any(text in c.text for c in commands), f"placeholder {text} no longer in the tour"


def test_readme_tour_runs_as_written(shell: Shell):
    tour = Tour(shell)
    for block in tour_blocks():
        if block.file_name is not None:
            (shell.cwd / block.file_name).write_text(block.text + "\n", encoding="utf-8")
        elif block.lang == "python":
            script = f"script-{block.section.split('.')[0]}.py"
            result = shell.python(block.text, script)
            tour.check(result, expectation(result.command))
        elif block.lang == "sh":
            for command in block.commands():
                if not _not_run(command):
                    tour.run(command.text)
        else:
            raise AssertionError(f"README line {block.line}: a {block.lang!r} block in the tour")
    exported = onnx.load(str(shell.cwd / "machine-health.onnx"))
    assert [i.name for i in exported.graph.input] == ["X"], "step 5 sends X"
