"""A user-space WAN emulator: a TCP proxy that adds delay, jitter, loss and partitions.

Kernel netem is not available on our machines, so tests, the demo and the benchmarks place a
site "far away" by putting one of these proxies in front of it. Each direction of each
connection is a FIFO pipe: a chunk read at time *t* is written at ``t + delay + jitter``
(never before the previous chunk, so jitter does not reorder the byte stream, as TCP would
not either).

What is emulated, and how:

- **delay** — one way, per direction; a request/response exchange costs ``2 * delay``.
- **handshake** — a new connection's first bytes reach the upstream no earlier than
  ``3 * delay`` after the client connected (SYN, SYN-ACK, then ACK with data), so a fresh
  connection costs two round trips and a kept-alive one costs one, as on a real WAN.
- **jitter** — uniform in ``[0, jitter]`` added to each chunk.
- **loss** — TCP never loses bytes, it retransmits them late. ``loss_mode="retransmit"``
  (default) delays a chunk by ``rto`` (200 ms, Linux's minimum retransmission timeout) with
  probability ``loss``; ``loss_mode="reset"`` instead drops the whole connection with that
  probability, which is what a client sees when a middlebox gives up on a flow.
- **partition** — :meth:`WanLink.cut` with ``mode="blackhole"`` (default) stops delivering
  in both directions and accepts new connections that then hang, like a real partition where
  packets vanish; held bytes are delivered after :meth:`WanLink.restore`, as TCP
  retransmissions would. ``mode="reset"`` closes every connection and refuses new ones
  (the peer's host is up but unreachable: RST / ICMP unreachable).

Control it from Python while it runs (thread-safe): :meth:`WanLink.set`, :meth:`cut`,
:meth:`restore`; the CLI ``modelfleet sim wan`` also toggles a partition on SIGUSR1 / SIGUSR2.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from modelfleet.errors import InvalidInput

__all__ = ["LinkSettings", "LinkStats", "WanLink", "parse_duration", "parse_hostport"]

LossMode = Literal["retransmit", "reset"]
CutMode = Literal["blackhole", "reset"]
_CHUNK = 65536


def parse_duration(text: str) -> float:
    """``"40ms"``, ``"1.5s"``, ``"250us"`` or a bare number of seconds -> seconds."""
    value = text.strip().lower()
    for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1.0)):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], scale
            break
    else:
        number, factor = value, 1.0
    try:
        seconds = float(number) * factor
    except ValueError:
        raise InvalidInput(f"invalid duration {text!r}: use e.g. 40ms, 1.5s or 250us") from None
    if seconds < 0:
        raise InvalidInput(f"invalid duration {text!r}: must not be negative")
    return seconds


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9000"`` (or ``":9000"``) -> ``("127.0.0.1", 9000)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInput(f"invalid address {text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


@dataclass
class LinkSettings:
    """The link's current character; change it while running with :meth:`WanLink.set`."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    loss_mode: LossMode = "retransmit"
    rto_s: float = 0.2
    handshake: bool = True

    def check(self) -> LinkSettings:
        if self.delay_s < 0 or self.jitter_s < 0 or self.rto_s < 0:
            raise InvalidInput("delay, jitter and rto must not be negative")
        if not 0.0 <= self.loss <= 1.0:
            raise InvalidInput(f"loss {self.loss} must be between 0 and 1")
        if self.loss_mode not in ("retransmit", "reset"):
            raise InvalidInput(f"loss mode {self.loss_mode!r}: use retransmit or reset")
        return self


@dataclass
class LinkStats:
    """Counters since start; ``aborted`` counts connections the client closed while a
    request was outstanding (e.g. a hedged request being cancelled)."""

    connections: int = 0
    open: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    losses: int = 0
    resets: int = 0
    aborted: int = 0


@dataclass(eq=False)
class _Conn:
    accepted_at: float
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    last_up: float = 0.0  # when bytes last went client -> upstream
    last_down: float = 0.0  # when bytes last went upstream -> client
    closing: bool = False


class WanLink:
    """One emulated WAN link: ``listen`` -> ``upstream``.

    Use as a context manager (runs in a background thread with its own event loop), or
    ``await link.serve()`` / ``await link.aclose()`` inside a running loop.
    """

    def __init__(
        self,
        upstream: tuple[str, int] | str,
        *,
        listen: tuple[str, int] | str = ("127.0.0.1", 0),
        delay_s: float = 0.0,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        loss_mode: LossMode = "retransmit",
        rto_s: float = 0.2,
        handshake: bool = True,
        seed: int | None = None,
        scheme: Literal["http", "https"] = "http",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """``clock`` and ``sleep`` are the link's sense of time (tests inject a virtual one,
        so what the link holds back is checked exactly, whatever the machine's speed).
        ``scheme`` is only what :attr:`url` says: the link relays TLS bytes untouched, so in
        front of an HTTPS server it is ``https`` (the certificate names the server, and the
        link's loopback address is among the host names a fleet certificate carries)."""
        self.scheme = scheme
        self._clock = clock
        self._sleep = sleep
        self.upstream = parse_hostport(upstream) if isinstance(upstream, str) else upstream
        self._listen = parse_hostport(listen) if isinstance(listen, str) else listen
        self.settings = LinkSettings(delay_s, jitter_s, loss, loss_mode, rto_s, handshake).check()
        self.stats = LinkStats()
        self._rng = random.Random(seed)
        self._cut: CutMode | None = None
        self._restored: asyncio.Event | None = None
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # --------------------------------------------------------------------- addresses

    @property
    def host(self) -> str:
        return self._listen[0]

    @property
    def port(self) -> int:
        return self._port or self._listen[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http(s)://host:port`` of the near end (what clients dial)."""
        return f"{self.scheme}://{self.address}"

    # --------------------------------------------------------------------- control

    def set(
        self,
        *,
        delay_s: float | None = None,
        jitter_s: float | None = None,
        loss: float | None = None,
        loss_mode: LossMode | None = None,
    ) -> None:
        """Change the link while it runs; applies to bytes read from now on."""
        current = self.settings
        self.settings = LinkSettings(
            current.delay_s if delay_s is None else delay_s,
            current.jitter_s if jitter_s is None else jitter_s,
            current.loss if loss is None else loss,
            current.loss_mode if loss_mode is None else loss_mode,
            current.rto_s,
            current.handshake,
        ).check()

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    def cut(self, mode: CutMode = "blackhole") -> None:
        """Partition the link (see the module docstring for the two modes)."""
        if mode not in ("blackhole", "reset"):
            raise InvalidInput(f"cut mode {mode!r}: use blackhole or reset")
        self._call(self._do_cut, mode)

    def restore(self) -> None:
        """Heal the partition; held bytes of black-holed connections flow again."""
        self._call(self._do_restore)

    def _call(self, fn: object, *args: object) -> None:
        loop = self._loop
        if loop is None or not callable(fn):
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(5)

    def _do_cut(self, mode: CutMode) -> None:
        held = self._restored
        self._cut = mode
        self._restored = asyncio.Event()
        if mode == "reset":
            for conn in list(self._conns):
                self._abort(conn)
            if held is not None:
                # Bytes held by a black-hole cut now reset are dropped, not left waiting on
                # an event no restore will set: their connections were just aborted.
                held.set()

    def _do_restore(self) -> None:
        self._cut = None
        if self._restored is not None:
            self._restored.set()

    # --------------------------------------------------------------------- lifecycle

    async def serve(self) -> WanLink:
        """Start listening in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self._listen[0], self._listen[1])
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                self._abort(conn)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def start(self) -> WanLink:
        """Run in a background thread (daemon) with its own event loop."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.serve())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.aclose())
            loop.close()

        self._thread = threading.Thread(target=main, name=f"wan-{self.upstream[1]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise InvalidInput(f"cannot listen on {self._listen[0]}:{self._listen[1]}: {errors[0]}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        self._thread = None

    def __enter__(self) -> WanLink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --------------------------------------------------------------------- the pipes

    def _abort(self, conn: _Conn) -> None:
        if conn.closing:
            return
        conn.closing = True
        self.stats.resets += 1
        for writer in conn.writers:
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        now = self._clock()
        if self._cut == "reset":
            client_w.transport.abort()
            return
        conn = _Conn(accepted_at=now, writers=[client_w])
        self._conns.add(conn)
        self.stats.connections += 1
        self.stats.open += 1
        try:
            try:
                up_r, up_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                client_w.transport.abort()  # the far host is down: the client sees a reset
                return
            conn.writers.append(up_w)
            setting = self.settings
            first = now + (3 * setting.delay_s if setting.handshake else 0.0)
            await asyncio.gather(
                self._pipe(conn, client_r, up_w, up=True, not_before=first),
                self._pipe(conn, up_r, client_w, up=False, not_before=0.0),
                return_exceptions=True,
            )
        finally:
            self._conns.discard(conn)
            self.stats.open -= 1
            for writer in conn.writers:
                with contextlib.suppress(Exception):
                    writer.transport.abort()

    def _due(self, not_before: float, last: float) -> tuple[float, bool]:
        s = self.settings
        due = self._clock() + s.delay_s
        if s.jitter_s:
            due += self._rng.uniform(0.0, s.jitter_s)
        lost = bool(s.loss) and self._rng.random() < s.loss
        if lost and s.loss_mode == "retransmit":
            due += s.rto_s
        return max(due, not_before, last), lost

    async def _pipe(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        up: bool,
        not_before: float,
    ) -> None:
        """Read, stamp each chunk with its delivery time, deliver in order."""
        queue: deque[tuple[float, bytes]] = deque()
        wake = asyncio.Event()
        eof = False

        async def deliver() -> None:
            while True:
                while not queue:
                    if eof:
                        with contextlib.suppress(Exception):
                            if writer.can_write_eof():
                                writer.write_eof()
                        return
                    wake.clear()
                    await wake.wait()
                due, data = queue[0]
                delay = due - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                while self._cut == "blackhole" and self._restored is not None:
                    await self._restored.wait()
                queue.popleft()
                writer.write(data)
                if up:
                    self.stats.bytes_up += len(data)
                    conn.last_up = self._clock()
                else:
                    self.stats.bytes_down += len(data)
                    conn.last_down = self._clock()
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        last = 0.0
        try:
            while not sender.done():
                data = await reader.read(_CHUNK)
                if not data:
                    if up and conn.last_up > conn.last_down and not conn.closing:
                        # The client left with a request outstanding (a cancelled hedge,
                        # a timeout): the far end will still get the bytes, as on a WAN.
                        self.stats.aborted += 1
                    break
                if up:
                    conn.last_up = max(conn.last_up, self._clock())
                due, lost = self._due(not_before, last)
                if lost:
                    self.stats.losses += 1
                    if self.settings.loss_mode == "reset":
                        self._abort(conn)
                        break
                last = due
                queue.append((due, data))
                wake.set()
        except (ConnectionError, OSError):
            pass  # the sender hung up: end the stream like a clean EOF
        finally:
            eof = True
            wake.set()
        with contextlib.suppress(Exception):
            await sender
