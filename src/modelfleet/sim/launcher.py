"""Start and stop real hub processes on loopback (used by the demo and integration tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelfleet.errors import ModelfleetError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ModelfleetError(f"process exited with code {proc.returncode} before {url} was up")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise ModelfleetError(f"{url} did not come up within {timeout:.0f}s")


@dataclass
class HubProcess:
    """A ``modelfleet hub serve`` child process."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    db: str | None = None
    artifacts: str | None = None
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> HubProcess:
        cmd = [
            sys.executable, "-m", "modelfleet", "hub", "serve",
            "--data-dir", str(self.data_dir), "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        if self.db:
            cmd += ["--db", self.db]
        if self.artifacts:
            cmd += ["--artifacts", self.artifacts]
        log = (self.log_path or self.data_dir / "hub.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
        log.close()
        wait_http(f"{self.url}/healthz", timeout, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
