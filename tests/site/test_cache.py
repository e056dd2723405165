"""BlobCache: commits only verified bytes, resumes partial downloads, collects garbage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelfleet.errors import DigestMismatch, InvalidInput, NotFound
from modelfleet.site.cache import BlobCache


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


def test_commit_wrong_size(cache: BlobCache) -> None:
    data = b"abc"
    digest = download(cache, data)
    with pytest.raises(DigestMismatch):
        cache.commit(digest, 4)
    assert not cache.has(digest)


def test_commit_without_partial(cache: BlobCache) -> None:
    with pytest.raises(NotFound):
        cache.commit(digest_of(b"x"), 1)


def test_resume_appends_to_partial(cache: BlobCache) -> None:
    data = b"0123456789" * 500
    digest = digest_of(data)
    partial = cache.partial_path(digest)
    partial.write_bytes(data[:1234])  # a download cut short
    assert partial.stat().st_size == 1234  # the Range offset to resume from
    with partial.open("ab") as handle:
        handle.write(data[partial.stat().st_size :])
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
