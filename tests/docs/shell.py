"""A user's shell for the docs tests: one working directory, one environment, real processes.

Commands run through ``bash -c`` in the tour's directory with the environment the earlier
``export`` lines built, so ``$MODELFLEET_HUB_URL``, ``;`` and quoting behave as in the
reader's terminal. Servers (``hub serve``, ``site serve``, ``gateway serve``) start in the
background, as in "another shell", and count as started once they report listening in the
ready file every modelfleet server writes (``--ready-file``, appended here: the only word a
docs test adds to a command). ``--watch`` commands that never end by themselves are read until
their screen shows what the page says, then stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelfleet.transport.listen import read_ready_file

#: Longest any one command may take (a rollout's bake, a federated job's rounds included).
COMMAND_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code and everything it printed (stdout then stderr)."""

    command: str
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"$ {self.command}\nexit {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


@dataclass
class Server:
    """A background command and where its output goes."""

    command: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Shell:
    """The reader's terminal: a directory, an environment and the servers started from it."""

    cwd: Path
    env: dict[str, str]
    servers: list[Server] = field(default_factory=list)

    def run(self, command: str, *, timeout: float = COMMAND_TIMEOUT_S) -> Result:
        """Run ``command`` to its end; an ``export`` line updates this shell's environment."""
        if command.startswith("export "):
            return self._export(command)
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(command, proc.returncode, proc.stdout, proc.stderr)

    def _export(self, command: str) -> Result:
        """Let bash evaluate the export (quotes, ``$VAR``), then keep the environment it left."""
        proc = subprocess.run(
            ["bash", "-c", f"{command} && env -0"],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=30,
        )
        if proc.returncode == 0:
            pairs = (item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
            self.env = {key: value for key, value in pairs if key not in ("_", "SHLVL", "PWD")}
        return Result(command, proc.returncode, "", proc.stderr.decode(errors="replace"))

    def start(self, command: str, *, timeout: float = 60.0) -> Server:
        """Start a modelfleet server in the background and wait until it listens."""
        n = len(self.servers)
        ready = self.cwd / f".ready-{n}.json"
        log = self.cwd / f".server-{n}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command} --ready-file {shlex.quote(str(ready))}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(command, proc, log)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while read_ready_file(ready) is None:
            if proc.poll() is not None:
                raise AssertionError(f"$ {command}\nexited {proc.returncode}:\n{server.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"$ {command}\nnot listening after {timeout:.0f}s")
            time.sleep(0.05)
        return server

    def watch(self, command: str, seen: Callable[[str], bool], *, timeout: float = 60.0) -> Result:
        """Run a ``--watch`` command that redraws until stopped; stop it once ``seen(screen)``."""
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        chunks: list[str] = []
        done = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                chunks.append(line)
                if seen("".join(chunks)):
                    done.set()
            done.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        done.wait(timeout)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        reader.join(5)
        return Result(command, 0 if seen("".join(chunks)) else 1, "".join(chunks), err)

    def python(self, script: str, name: str) -> Result:
        """Run a page's Python block as the script a reader would paste into a file."""
        path = self.cwd / name
        path.write_text(script, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(path)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        return Result(f"python {name}", proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL for one that does not stop)."""
        for server in reversed(self.servers):
            if server.proc.poll() is None:
                os.killpg(server.proc.pid, signal.SIGTERM)
        for server in reversed(self.servers):
            try:
                server.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()


def tokens_in(text: str, pattern: str) -> list[str]:
    """Every match of ``pattern`` in ``text`` (for values a user copies from an output)."""
    return re.findall(pattern, text)
