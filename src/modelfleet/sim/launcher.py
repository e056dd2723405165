"""Start and stop real hub, site and gateway processes on loopback (the demo, tests, benchmarks).

Ports. Each process object holds its port *reserved* for as long as the object lives: a
socket bound to ``127.0.0.1:<port>`` with ``SO_REUSEADDR`` that never listens. While it is
held, the kernel gives that port to no one else (``bind`` to port 0 and outgoing
connections skip it), yet the child can bind it too (``SO_REUSEADDR`` on both sides, only
one of them listening) and listen. So the port is known before the child starts (a WAN link
can be put in front of it first), a child restarted "on the same port" never races another
process for it, and while no child runs, connecting to the port is refused, as with any
process that is down. Finding a free port by binding and releasing it instead lets anyone
take it in between. (These are Linux's rules for ``SO_REUSEADDR``, where the tests, the demo
and CI run.)

Readiness. Each child is told ``--ready-file``: once listening, it writes its pid and port
there (:mod:`modelfleet.transport.listen`). :func:`wait_http` waits for that report before it
believes an HTTP 200: the answer then comes from the process that was started, on the port it
reported, not from whatever else might be listening there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from modelfleet.errors import ModelfleetError
from modelfleet.transport.listen import read_ready_file

__all__ = [
    "GatewayProcess",
    "HubProcess",
    "PortReservation",
    "SiteProcess",
    "issue_gateway_certificate",
    "reserve_port",
    "wait_http",
]


class PortReservation:
    """A loopback port nobody else gets while this object lives (see the module docstring).

    A child process may listen on it, provided it binds with ``SO_REUSEADDR`` (the modelfleet
    servers, uvicorn and asyncio servers all do).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
        except OSError:
            sock.close()
            raise
        self.host = host
        self.port: int = sock.getsockname()[1]
        self._sock = sock
        self._finalizer = weakref.finalize(self, sock.close)

    def close(self) -> None:
        """Give the port back."""
        self._finalizer()


def reserve_port(host: str = "127.0.0.1") -> PortReservation:
    """Reserve a free port on ``host`` for a child process to listen on."""
    return PortReservation(host)


#: The ready file each launched child writes (read by :func:`wait_http`).
_READY_FILES: weakref.WeakKeyDictionary[subprocess.Popen[bytes], Path] = weakref.WeakKeyDictionary()
#: The fleet CA an HTTPS child is verified with, so ``wait_http(url, t, proc)`` needs no more.
_CA_FILES: weakref.WeakKeyDictionary[subprocess.Popen[bytes], Path] = weakref.WeakKeyDictionary()
#: Where each child's output goes, so a child that dies before it is up says why.
_LOG_FILES: weakref.WeakKeyDictionary[subprocess.Popen[bytes], Path] = weakref.WeakKeyDictionary()
#: How much of a dead child's log an error quotes.
_LOG_TAIL_BYTES = 1500


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def _check_alive(proc: subprocess.Popen[bytes] | None, url: str) -> None:
    if proc is not None and proc.poll() is not None:
        raise ModelfleetError(
            f"process exited with code {proc.returncode} before {url} was up{_log_tail(proc)}"
        )


def _log_tail(proc: subprocess.Popen[bytes]) -> str:
    """The end of what ``proc`` wrote, for an error that says why it stopped."""
    log = _LOG_FILES.get(proc)
    if log is None:
        return ""
    try:
        with log.open("rb") as file:
            file.seek(max(0, log.stat().st_size - _LOG_TAIL_BYTES))
            tail = file.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return f"; the end of its log ({log}):\n{tail}" if tail else f"; its log {log} is empty"


def wait_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    ca_file: Path | None = None,
    token: str | None = None,
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits. ``token``: sent as
    the bearer credential (a site's model endpoints need an infer token).

    With a ``proc`` started by this module, an answer counts only once ``proc`` has reported
    (in its ready file) that it listens on ``url``'s port, and while it is alive: then the 200
    is its own. Without ``proc`` (a URL through a proxy, say) any 200 counts.

    An ``https`` URL is verified against ``ca_file``, else against the fleet CA ``proc`` was
    started with (a site's CA file appears only once it has enrolled: until then, ask again).
    """
    deadline = time.monotonic() + timeout
    if ca_file is None and proc is not None:
        ca_file = _CA_FILES.get(proc)
    ready_file = _READY_FILES.get(proc) if proc is not None else None
    if proc is not None and ready_file is not None:
        while True:
            _check_alive(proc, url)
            report = read_ready_file(ready_file)
            if report is not None:
                break
            if time.monotonic() >= deadline:
                raise ModelfleetError(f"{url}: the process did not report ready in {timeout:.0f}s")
            time.sleep(0.02)
        if report.pid != proc.pid or report.port != _url_port(url):
            raise ModelfleetError(
                f"{url} is not served by process {proc.pid}: it reported pid {report.pid} "
                f"listening on port {report.port}"
            )
    while time.monotonic() < deadline:
        _check_alive(proc, url)
        try:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
            )
        except FileNotFoundError:
            time.sleep(0.05)  # a site's CA, written when it enrolls
            continue
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else None
            if httpx.get(url, timeout=1.0, verify=verify, headers=headers).status_code == 200:
                _check_alive(proc, url)  # the answer came while it was alive
                return
        except httpx.TransportError:
            pass  # not listening yet: ask again
        time.sleep(0.05)
    raise ModelfleetError(f"{url} did not come up within {timeout:.0f}s")


class _Child:
    """A server child process on a reserved port; stopping it politely or as a crash."""

    proc: subprocess.Popen[bytes] | None
    port: int
    _reservation: PortReservation | None
    _ready_dir: Path

    def _reserve(self) -> None:
        """Called by the dataclasses' ``__post_init__``: port 0 means "reserve one"."""
        self._reservation = None
        if self.port == 0:
            self._reservation = reserve_port()
            self.port = self._reservation.port
        self._ready_dir = Path(tempfile.mkdtemp(prefix="modelfleet-ready-"))
        weakref.finalize(self, shutil.rmtree, self._ready_dir, True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_file(self) -> Path:
        """Where the current child reports its pid and port once it listens."""
        return self._ready_dir / "ready.json"

    def _spawn(
        self,
        cmd: list[str],
        env: dict[str, str],
        log_path: Path,
        ca_file: Path | None = None,
    ) -> None:
        self.ready_file.unlink(missing_ok=True)  # a previous child's report
        log = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                [*cmd, "--ready-file", str(self.ready_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            log.close()
        _READY_FILES[proc] = self.ready_file
        if log_path != Path(os.devnull):
            _LOG_FILES[proc] = log_path
        if ca_file is not None:
            _CA_FILES[proc] = ca_file
        self.proc = proc

    def kill(self) -> None:
        """SIGKILL: no clean-up runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. The port stays reserved for a restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class HubProcess(_Child):
    """A ``modelfleet hub serve`` child process (port 0: a reserved free port)."""

    data_dir: Path
    port: int = 0
    db: str | None = None
    artifacts: str | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: HTTPS with the data directory's fleet CA, as in production. False (``--insecure-http``)
    #: only for tests about plain HTTP itself.
    tls: bool = True

    def __post_init__(self) -> None:
        self._reserve()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The fleet CA clients of this hub verify it against."""
        return self.data_dir / "tls" / "ca.pem"

    def start(self, timeout: float = 30.0) -> HubProcess:
        cmd = [
            sys.executable, "-m", "modelfleet", "hub", "serve",
            "--data-dir", str(self.data_dir), "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        if not self.tls:
            cmd.append("--insecure-http")
        if self.db:
            cmd += ["--db", self.db]
        if self.artifacts:
            cmd += ["--artifacts", self.artifacts]
        env = {**os.environ, **self.extra_env}
        ca_file = self.ca_file if self.tls else None
        self._spawn(cmd, env, self.log_path or self.data_dir / "hub.log", ca_file)
        wait_http(f"{self.url}/healthz", timeout, self.proc)
        return self


@dataclass
class SiteProcess(_Child):
    """A ``modelfleet site serve`` child process with its own state directory."""

    state_dir: Path
    hub_url: str
    enrollment_token: str | None = None
    port: int = 0
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Quiet by default: simulations run many sites.
    log_level: str = "warning"
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self._reserve()

    @property
    def tls(self) -> bool:
        """A site of an HTTPS hub serves HTTPS with the certificate enrollment gave it."""
        return self.hub_url.startswith("https://")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The fleet CA this site pinned at enrollment (what its clients verify it with)."""
        return self.state_dir / "tls" / "ca.pem"

    def start(self, timeout: float = 30.0, *, wait_ready: bool = True) -> SiteProcess:
        cmd = [
            sys.executable, "-m", "modelfleet", "site", "serve",
            "--hub", self.hub_url, "--state-dir", str(self.state_dir),
            "--port", str(self.port), "--log-level", self.log_level,
        ]  # fmt: skip
        if not self.tls:
            cmd.append("--insecure-http")  # a site of an --insecure-http hub, on loopback
        if self.enrollment_token:
            cmd += ["--enroll", self.enrollment_token]
            self.enrollment_token = None  # single use: later restarts use the state dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MODELFLEET_SITE_REPORT_INTERVAL_S": "0.5", **self.extra_env}
        log_path = self.log_path or self.state_dir.parent / f"{self.state_dir.name}.log"
        self._spawn(cmd, env, log_path, self.ca_file if self.tls else None)
        if wait_ready:
            wait_http(f"{self.url}/v2/health/ready", timeout, self.proc)
        return self


def issue_gateway_certificate(hub_data_dir: Path, out: Path, name: str = "gateway") -> Path:
    """What ``modelfleet hub cert issue --name NAME --out OUT`` does: a gateway certificate
    for loopback from the hub's fleet CA in ``out``; returns ``out`` (a ``--tls-dir``)."""
    from datetime import timedelta

    from modelfleet.pki.ca import FleetCA
    from modelfleet.pki.certdir import issue_to_dir
    from modelfleet.pki.identity import gateway_identity

    ca = FleetCA.load(Path(hub_data_dir) / "tls")
    hosts = ("localhost", "127.0.0.1")
    issue_to_dir(ca, gateway_identity(name), hosts, Path(out), timedelta(days=1))
    return Path(out)


@dataclass
class GatewayProcess(_Child):
    """A ``modelfleet gateway serve`` child process; ``args`` are its other options.

    HTTPS with the certificate directory ``tls_dir`` (:func:`issue_gateway_certificate`);
    ``insecure_http=True`` only for tests about plain HTTP itself.
    """

    args: list[str] = field(default_factory=list)
    port: int = 0
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    tls_dir: Path | None = None
    insecure_http: bool = False

    def __post_init__(self) -> None:
        self._reserve()

    @property
    def tls(self) -> bool:
        return not self.insecure_http

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The fleet CA clients of this gateway verify it against."""
        if self.tls_dir is None:
            raise ModelfleetError("this gateway has no certificate directory (tls_dir)")
        return self.tls_dir / "ca.pem"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        cmd = [
            sys.executable, "-m", "modelfleet", "gateway", "serve",
            "--port", str(self.port), *self.args,
        ]  # fmt: skip
        if self.insecure_http:
            cmd.append("--insecure-http")
        elif self.tls_dir is None:
            raise ModelfleetError(
                "a GatewayProcess serves HTTPS: give it tls_dir (issue_gateway_certificate) "
                "or insecure_http=True"
            )
        else:
            cmd += ["--tls-dir", str(self.tls_dir)]
        env = {**os.environ, **self.extra_env}
        ca_file = self.ca_file if self.tls else None
        # Kept next to the ready file unless a log path is given: a gateway that fails to
        # start says why in the error (wait_http quotes the end of the log).
        self._spawn(cmd, env, self.log_path or self._ready_dir / "gateway.log", ca_file)
        wait_http(f"{self.url}/v2/health/live", timeout, self.proc)
        return self
