"""BlobCache: commits only verified bytes, resumes partial downloads, collects garbage."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelfleet.errors import DigestMismatch, HubUnreachable, InvalidInput, NotFound
from modelfleet.site.cache import BlobCache
from modelfleet.site.hub_link import HubLink
from modelfleet.transport.session import HubSession


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


def download(cache: BlobCache, data: bytes) -> str:
    digest = digest_of(data)
    cache.partial_path(digest).write_bytes(data)
    return digest


def test_commit_good(cache: BlobCache) -> None:
    data = b"model bytes" * 1000
    digest = download(cache, data)
    assert not cache.has(digest)
    path = cache.commit(digest, len(data))
    assert path == cache.path(digest) == cache.root / "blobs" / "sha256" / digest[7:]
    assert path.read_bytes() == data
    assert cache.has(digest)
    assert cache.has(digest[7:])  # bare hex works too
    assert not cache.partial_path(digest).exists()
    assert cache.digests() == [digest]
    assert cache.size_bytes() == len(data)


def test_commit_tampered_leaves_nothing(cache: BlobCache) -> None:
    data = bytearray(b"model bytes" * 1000)
    digest = digest_of(bytes(data))
    data[500] ^= 0x01
    cache.partial_path(digest).write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="discarded"):
        cache.commit(digest, len(data))
    assert not cache.has(digest)
    assert not cache.partial_path(digest).exists()
    assert cache.digests() == []
    assert cache.size_bytes() == 0


def test_a_blob_damaged_after_commit_is_not_intact_and_is_discarded(cache: BlobCache) -> None:
    data = b"model bytes" * 1000
    digest = download(cache, data)
    path = cache.commit(digest, len(data))
    assert cache.intact(digest, len(data))
    assert not cache.intact(digest, len(data) + 1)  # the size is part of what is promised
    assert not cache.has(digest)  # ...and a blob that breaks a promise is gone
    cache.commit(download(cache, data), len(data))
    path.chmod(0o644)
    damaged = bytearray(data)
    damaged[123] ^= 0x01
    path.write_bytes(bytes(damaged))
    assert cache.has(digest)  # a file is there, but it is not the blob
    assert not cache.intact(digest, len(data))
    assert not cache.has(digest)
    assert not cache.intact(digest, len(data))  # absent: not intact either


def test_commit_wrong_size(cache: BlobCache) -> None:
    data = b"abc"
    digest = download(cache, data)
    with pytest.raises(DigestMismatch):
        cache.commit(digest, 4)
    assert not cache.has(digest)


def test_commit_without_partial(cache: BlobCache) -> None:
    with pytest.raises(NotFound):
        cache.commit(digest_of(b"x"), 1)


class BlobServer:
    """Serves one blob as the hub does (``Range: bytes=N-`` answered 206), records the Range
    header of every request, and cuts the first response after ``cut_at`` bytes of body."""

    def __init__(self, data: bytes, cut_at: int) -> None:
        self.data = data
        self.cut_at: int | None = cut_at
        self.ranges: list[str | None] = []
        blob = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                blob.ranges.append(wanted)
                start = 0
                if wanted is not None:
                    start = int(wanted.removeprefix("bytes=").removesuffix("-"))
                body = blob.data[start:]
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Length", str(len(body)))
                if wanted:
                    total = len(blob.data)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.end_headers()
                cut, blob.cut_at = blob.cut_at, None
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])  # then the connection dies mid-body
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0, read back
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_interrupted_download_resumes_with_a_range_request(cache: BlobCache) -> None:
    """A real download (HubLink, as the agent uses it) cut mid-body leaves a partial file;
    the next attempt asks for exactly the missing bytes, and the commit verifies the whole."""
    data = os.urandom(3 * (1 << 20) + 12345)  # several of HubLink's 1 MiB write chunks
    digest = digest_of(data)
    server = BlobServer(data, cut_at=len(data) // 2 + 777)
    session = HubSession(server.url, "token")
    link = HubLink(session, "plant-eu")
    partial = cache.partial_path(digest)
    url = f"/api/v1/blobs/{digest[7:]}"
    try:
        with pytest.raises(HubUnreachable, match="interrupted"):
            link.download(url, partial, len(data))
        have = partial.stat().st_size
        assert 0 < have < len(data)
        assert partial.read_bytes() == data[:have]
        link.download(url, partial, len(data))
    finally:
        session.close()
        server.close()
    assert server.ranges == [None, f"bytes={have}-"]  # the resumed request, at the right offset
    assert cache.commit(digest, len(data)).read_bytes() == data


def test_gc_keeps_kept_ones(cache: BlobCache) -> None:
    keep_blob = download(cache, b"keep")
    cache.commit(keep_blob, 4)
    drop_blob = download(cache, b"drop")
    cache.commit(drop_blob, 4)
    in_flight = download(cache, b"in flight")
    stale = download(cache, b"stale partial")
    stray = cache.root / "blobs" / "sha256" / "README"
    stray.write_text("not a blob")

    removed = cache.gc({keep_blob, in_flight[7:]})

    assert sorted(removed) == sorted([str(cache.path(drop_blob)), str(cache.partial_path(stale))])
    assert cache.digests() == [keep_blob]
    assert cache.partial_path(in_flight).exists()
    assert stray.exists()
    assert cache.size_bytes() == len(b"keep") + len(b"in flight")
    assert cache.gc({keep_blob, in_flight}) == []


def test_reopen_sees_committed_blobs(tmp_path: Path) -> None:
    first = BlobCache(tmp_path / "c")
    digest = download(first, b"persisted")
    first.commit(digest, 9)
    assert BlobCache(tmp_path / "c").digests() == [digest]


@pytest.mark.parametrize(
    "bad", ["", "sha256:", "../../etc/passwd", "sha256:" + "A" * 64, "md5:" + "0" * 64, "0" * 63]
)
def test_bad_digests_are_refused(cache: BlobCache, bad: str) -> None:
    with pytest.raises(InvalidInput):
        cache.path(bad)
    with pytest.raises(InvalidInput):
        cache.partial_path(bad)
