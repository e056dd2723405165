r"""The builtin server answers generated, hostile bytes with well-formed 2xx/4xx, in order.

Raw sockets against a real server on loopback (uvloop, as in production): generated
request lines (bad methods and versions, junk bytes, overlong targets, missing CRLF),
header blocks (duplicate and invalid names, obs-fold, Content-Length / Transfer-Encoding
combinations, negative or huge chunk sizes) and pipelines mixing good and bad requests.
Each stream ends with a good ``Connection: close`` request, so a connection the server
keeps open ends promptly too. Properties:

- everything the server sends parses as HTTP/1.1 responses, each 2xx or 4xx;
- a refusal (every 4xx here comes from the server: the app only answers 200) is the last
  thing on the connection, which is then closed;
- the good requests pipelined before the first hostile one are answered first, in order;
- a new connection is served afterwards; nothing is logged at ERROR or with a traceback.

Then slowloris: peers that trickle a request line, headers, a body or blank lines are cut
off by the request or idle timeout (shortened for the test; nothing about timing is
asserted beyond "it was closed").

Derandomized for CI; for a deeper, random search::

    MODELFLEET_FUZZ_EXAMPLES=2000 MODELFLEET_FUZZ_RANDOM=1 \
        pytest tests/transport/test_listener_fuzz.py
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httptools
import pytest
import uvloop
from hypothesis import example, given
from hypothesis import strategies as st

from modelfleet.transport import http11
from modelfleet.transport import server as listener
from tests.fuzzing import fuzz_settings
from tests.transport.conftest import BuiltinServer, read_until_closed, send_all

#: Short enough that an incomplete generated request ends quickly (408), long enough that
#: a whole request sent in one write always arrives in time, even on a loaded machine.
REQUEST_TIMEOUT_S = 1.0
REFUSALS = {400, 408, 413, 414, 431}
CLOSE = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

FUZZ = fuzz_settings(60)


class _Errors(logging.Handler):
    """Keeps every record at ERROR or above, or carrying a traceback, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[BuiltinServer, _Errors]]:
    errors = _Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    made = BuiltinServer(
        timeouts=(REQUEST_TIMEOUT_S, listener.IDLE_TIMEOUT_S),
        loop_factory=uvloop.new_event_loop,
    )
    try:
        yield made, errors
    finally:
        made.close()
        root.removeHandler(errors)


# --- generated requests -----------------------------------------------------------------

_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_junk = st.binary(min_size=1, max_size=24)
_method = st.one_of(
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]),
    st.sampled_from([b"", b"get", b"G ET", b"CONNECT", b"PRI", b"\x00GET", b"GE\x7fT", b"TRACE"]),
    _junk,
)
_target = st.one_of(
    st.builds(lambda t: b"/" + t.encode(), _token),
    st.sampled_from([b"/", b"/x?a=b&a=c", b"/%zz", b"/%00", b"*", b"http://h/x", b"//", b"/a b"]),
    st.sampled_from([b"/" + b"a" * (http11.MAX_URL_BYTES + 1), b"/" + b"%41" * 3000]),
    st.just(b""),
    _junk,
)
_version = st.one_of(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    st.sampled_from([b"HTTP/2.0", b"HTTP/1.9", b"HTTP/0.9", b"http/1.1", b"HTTP/11", b"", b"H"]),
    _junk,
)
_eol = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
_header = st.one_of(
    st.tuples(st.sampled_from([b"Host", b"X-A", b"Accept", b"User-Agent"]), _token.map(str.encode)),
    st.tuples(
        st.sampled_from([b"", b"Bad Name", b"x:y", b"\x00", b"Host ", b" Host", b"\x80\xff"]),
        _token.map(str.encode),
    ),
    st.tuples(st.just(b"X-Fold"), st.just(b"a\r\n  folded")),  # obs-fold
    st.tuples(st.just(b"X-Bin"), _junk),
    st.tuples(st.just(b"X-Big"), st.just(b"v" * (http11.MAX_HEADER_BYTES + 1))),
)
_length = st.sampled_from(
    [b"-1", b"abc", b"1, 2", b"99999999999999999999", b" 5", b"0x10", b"+4", b""]
)
_chunk_size = st.sampled_from(
    [b"-1", b"zz", b"fffffffffffffffffffff", b"ffffffff", b"4;ext=1", b"4 ", b""]
)


@st.composite
def _framing(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers that frame a body, and the body: right, wrong, or contradictory."""
    body = draw(st.binary(max_size=32))
    kind = draw(st.sampled_from(["none", "length", "bad-length", "two-lengths", "chunked"]))
    if kind == "none":
        return [], b""
    if kind == "length":
        declared = draw(st.sampled_from([len(body), len(body) + 3, max(0, len(body) - 3)]))
        return [(b"Content-Length", b"%d" % declared)], body
    if kind == "bad-length":
        return [(b"Content-Length", draw(_length))], body
    if kind == "two-lengths":
        return [(b"Content-Length", b"%d" % len(body)), (b"Content-Length", b"7")], body
    encodings = [b"chunked", b"gzip, chunked", b"chunked, gzip", b"chunked, chunked", b"x"]
    headers = [(b"Transfer-Encoding", draw(st.sampled_from(encodings)))]
    if draw(st.booleans()):
        headers.append((b"Content-Length", b"%d" % len(body)))
    size = b"%x" % len(body) if draw(st.booleans()) else draw(_chunk_size)
    terminator = draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"", b"-0\r\n\r\n"]))
    return headers, size + b"\r\n" + body + b"\r\n" + terminator


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=64))  # not HTTP at all
    line = draw(_method) + b" " + draw(_target) + b" " + draw(_version) + draw(_eol)
    headers = draw(st.lists(_header, max_size=4))
    framing, body = draw(_framing())
    headers = draw(st.permutations(headers + framing))
    block = b"".join(name + b": " + value + draw(_eol) for name, value in headers)
    return line + block + draw(_eol) + body


def _good(n: int) -> bytes:
    return b"POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok" % n


_pipeline = st.lists(st.one_of(st.integers(0, 99).map(_good), _hostile()), min_size=1, max_size=4)


# --- reading the answers --------------------------------------------------------------


class _Responses:
    """httptools' response parser: what does not parse is not well-formed HTTP."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.closing: list[bool] = []
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value.lower()))

    def on_message_complete(self) -> None:
        self.statuses.append(self._parser.get_status_code())
        self.closing.append((b"connection", b"close") in self._headers)
        self._headers = []

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


def _exchange(server: BuiltinServer, data: bytes) -> _Responses:
    """Send ``data``, read until the server closes; a connection still open after 30 s
    (the stream always ends in ``Connection: close`` or a refusal) is a failure."""
    sock = server.connect(timeout=30)
    chunks = []
    try:
        send_all(sock, data)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open after {b''.join(chunks)[:300]!r}")
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: what arrived is the answer
    finally:
        sock.close()
    answer = b"".join(chunks)
    parsed = _Responses()
    try:
        parsed.feed(answer)
    except httptools.HttpParserError as exc:
        pytest.fail(f"not well-formed HTTP ({exc}): {answer[:300]!r}")
    assert answer.endswith(b"\r\n\r\n") or not parsed.statuses or parsed.closing[-1], answer
    return parsed


def _still_serves(server: BuiltinServer) -> None:
    answers = _exchange(server, CLOSE)
    assert answers.statuses == [200]


def _check_quiet(errors: _Errors) -> None:
    found = [f"{r.name}: {r.getMessage()}" for r in errors.records]
    errors.records.clear()
    assert not found, found


@FUZZ
@given(parts=_pipeline)
@example(parts=[_good(1), b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n"])  # queued answer kept
@example(parts=[_good(1), b"GET /" + b"a" * (http11.MAX_URL_BYTES + 1) + b" HTTP/1.1\r\n\r\n"])
@example(parts=[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n"])
@example(parts=[b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"])
@example(parts=[b"GET / HTTP/1.1\r\nX-Fold: a\r\n folded\r\n\r\n"])
@example(parts=[b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", _good(2)])
@example(parts=[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"])
def test_generated_requests_get_well_formed_2xx_or_4xx(
    fuzzed: tuple[BuiltinServer, _Errors], parts: list[bytes]
) -> None:
    server, errors = fuzzed
    answers = _exchange(server, b"".join(parts) + CLOSE)
    statuses = answers.statuses
    assert statuses, "nothing answered"
    assert all(200 <= s < 300 or 400 <= s < 500 for s in statuses), statuses
    refused = [i for i, s in enumerate(statuses) if s >= 400]
    if refused:
        assert refused == [len(statuses) - 1], f"answers after a refusal: {statuses}"
        assert statuses[-1] in REFUSALS, statuses
        assert answers.closing[-1], "a refusal that does not say the connection closes"
    leading = next((i for i, p in enumerate(parts) if not p.startswith(b"POST /p")), len(parts))
    assert statuses[:leading] == [200] * leading, f"{leading} good requests first: {statuses}"
    if leading == len(parts):
        assert statuses == [200] * (len(parts) + 1)
    _still_serves(server)
    _check_quiet(errors)


def test_connections_beyond_the_limit_get_a_well_formed_503() -> None:
    small = BuiltinServer(max_connections=1, loop_factory=uvloop.new_event_loop)
    try:
        held = small.connect()
        held.sendall(_good(1))
        assert held.recv(100).startswith(b"HTTP/1.1 200")
        extra = _exchange(small, _good(2))
        assert extra.statuses == [503]
        assert extra.closing == [True]
        held.close()
    finally:
        small.close()


# --- slowloris ------------------------------------------------------------------------


def _dribble(sock: socket.socket, data: bytes, pause_s: float, give_up_s: float = 60) -> bool:
    """Send ``data`` a byte at a time (looping over it) until the server closes the
    connection; False if it was still open after ``give_up_s``. Answers are read and
    dropped on the way (the good request's 200, a 408)."""
    deadline = time.monotonic() + give_up_s
    sock.settimeout(pause_s)
    i = 0
    while time.monotonic() < deadline:
        try:
            sock.sendall(data[i % len(data) : i % len(data) + 1])
            i += 1
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True  # reset: closed
    return False


@pytest.fixture
def slow() -> Iterator[BuiltinServer]:
    made = BuiltinServer(timeouts=(0.5, 0.5), loop_factory=uvloop.new_event_loop)
    yield made
    made.close()


@pytest.mark.parametrize(
    ("opening", "trickle"),
    [
        (b"", b"GET / HTTP/1.1\r\n"),  # the request line
        (b"GET / HTTP/1.1\r\n", b"X-Slow: abcdefghijklmnopqrstuvwxyz\r\n"),  # headers
        (b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", b"b"),  # the body
        (b"", b"\r\n"),  # blank lines before any request (keep-alive idle)
        (_good(1), b"X"),  # a second, trickled request after a good one
    ],
    ids=["request-line", "headers", "body", "blank-lines", "after-a-request"],
)
def test_a_peer_trickling_bytes_is_disconnected(
    slow: BuiltinServer, opening: bytes, trickle: bytes
) -> None:
    sock = slow.connect()
    try:
        sock.sendall(opening)
        # A byte every 0.1 s keeps bytes coming well inside any per-read timeout; only a
        # deadline on the request as a whole (or on idling) ends this connection.
        assert _dribble(sock, trickle, pause_s=0.1), "still connected after 60 s"
    finally:
        sock.close()
    again = slow.connect()
    again.sendall(CLOSE)
    assert read_until_closed(again).startswith(b"HTTP/1.1 200")
    again.close()
