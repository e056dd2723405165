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
            pass  # not listening yet: ask again
        time.sleep(0.05)
    raise ModelfleetError(f"{url} did not come up within {timeout:.0f}s")


class _Child:
    """Stopping a child process: politely (SIGTERM, then SIGKILL after 10 s) or as a crash."""

    proc: subprocess.Popen[bytes] | None

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


@dataclass
class HubProcess(_Child):
    """A ``modelfleet hub serve`` child process."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    db: str | None = None
    artifacts: str | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
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
        env = {**os.environ, **self.extra_env}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        wait_http(f"{self.url}/healthz", timeout, self.proc)
        return self


@dataclass
class SiteProcess(_Child):
    """A ``modelfleet site serve`` child process with its own state directory."""

    state_dir: Path
    hub_url: str
    enrollment_token: str | None = None
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Quiet by default: simulations run many sites.
    log_level: str = "warning"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0, *, wait_ready: bool = True) -> SiteProcess:
        cmd = [
            sys.executable, "-m", "modelfleet", "site", "serve",
            "--hub", self.hub_url, "--state-dir", str(self.state_dir),
            "--port", str(self.port), "--log-level", self.log_level,
        ]  # fmt: skip
        if self.enrollment_token:
            cmd += ["--enroll", self.enrollment_token]
            self.enrollment_token = None  # single use: later restarts use the state dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_path or self.state_dir.parent / f"{self.state_dir.name}.log").open("ab")
        env = {**os.environ, "MODELFLEET_SITE_REPORT_INTERVAL_S": "0.5", **self.extra_env}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait_ready:
            wait_http(f"{self.url}/v2/health/ready", timeout, self.proc)
        return self
