"""One contract for every artifact store: local directory, S3 (moto on loopback), memory."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelfleet.errors import DigestMismatch, InvalidInput, NotFound, StoreError
from modelfleet.registry.artifacts import (
    COPY_CHUNK,
    ArtifactStore,
    LocalArtifactStore,
    mask_url,
    open_artifact_store,
)
from modelfleet.registry.artifacts_fsspec import FsspecArtifactStore

MakeBlob = Callable[[bytes], tuple[Path, str]]
DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, every offset distinguishable


def _read(store: ArtifactStore, digest: str, *args: Any, **kwargs: Any) -> bytes:
    return b"".join(store.read_range(digest, *args, **kwargs))


def test_put_then_exists_size_and_read(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(DATA)
    assert not store.exists(digest)
    assert store.put_file(path, digest) is True
    assert store.exists(digest)
    assert store.size(digest) == len(DATA)
    assert _read(store, digest) == DATA
    assert store.list_digests() == [digest]


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, None), (0, 10), (100, 5000), (5000, None), (10240, 10244), (7, 7), (0, 99999)],
)
def test_read_range_is_a_slice(
    store: ArtifactStore, make_blob: MakeBlob, start: int, end: int | None
) -> None:
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    assert _read(store, digest, start, end, chunk_size=1000) == DATA[start:end]


def test_read_range_chunks_respect_chunk_size(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    chunks = list(store.read_range(digest, 10, 3010, chunk_size=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 1000]


def test_empty_blob(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(b"")
    assert store.put_file(path, digest) is True
    assert store.size(digest) == 0
    assert _read(store, digest) == b""
    assert store.list_digests() == [digest]


def test_put_is_idempotent(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(DATA)
    assert store.put_file(path, digest) is True
    assert store.put_file(path, digest) is False
    assert store.list_digests() == [digest]
    assert _read(store, digest) == DATA


def test_wrong_digest_leaves_nothing(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, _ = make_blob(DATA)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DigestMismatch):
        store.put_file(path, wrong)
    assert not store.exists(wrong)
    assert store.list_digests() == []
    assert store.cleanup_temporaries(older_than_s=-60) == 0


def test_put_of_existing_digest_still_checks_bytes(
    store: ArtifactStore, make_blob: MakeBlob
) -> None:
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    other, _ = make_blob(b"not the same bytes")
    with pytest.raises(DigestMismatch):
        store.put_file(other, digest)
    assert _read(store, digest) == DATA


def test_missing_blob_is_not_found(store: ArtifactStore) -> None:
    digest = hashlib.sha256(b"absent").hexdigest()
    assert not store.exists(digest)
    with pytest.raises(NotFound):
        store.size(digest)
    # Raised by the call itself, before any iteration, so an HTTP handler can map it.
    with pytest.raises(NotFound):
        store.read_range(digest)
    assert store.delete(digest) is False


def test_missing_source_file_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.put_file(tmp_path / "nope", hashlib.sha256(b"").hexdigest())


def test_delete(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(DATA)
    other_path, other = make_blob(b"other")
    store.put_file(path, digest)
    store.put_file(other_path, other)
    assert store.delete(digest) is True
    assert store.delete(digest) is False
    assert not store.exists(digest)
    assert store.list_digests() == [other]


def test_list_is_sorted_and_excludes_temporaries(store: ArtifactStore, make_blob: MakeBlob) -> None:
    blobs = [make_blob(bytes([i]) * (i + 1)) for i in range(5)]
    for path, digest in blobs:
        store.put_file(path, digest)
    _plant_temporary(store)
    assert store.list_digests() == sorted(d for _, d in blobs)


def test_cleanup_temporaries_keeps_fresh_ones(store: ArtifactStore) -> None:
    _plant_temporary(store)
    assert store.cleanup_temporaries(older_than_s=3600) == 0
    time.sleep(0.05)
    assert store.cleanup_temporaries(older_than_s=0) == 1
    assert store.cleanup_temporaries(older_than_s=0) == 0


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "A" * 64,
        "g" * 64,
        "0" * 63,
        "0" * 65,
        "../" + "0" * 61,
        "sha256:" + "0" * 64,
        "0" * 63 + "\n",
    ],
)
def test_invalid_digest_is_refused(store: ArtifactStore, make_blob: MakeBlob, bad: str) -> None:
    path, _ = make_blob(DATA)
    for call in (
        lambda: store.put_file(path, bad),
        lambda: store.exists(bad),
        lambda: store.size(bad),
        lambda: store.read_range(bad),
        lambda: store.delete(bad),
        lambda: store.local_path(bad),
    ):
        with pytest.raises(InvalidInput):
            call()


@pytest.mark.parametrize(("start", "end", "chunk"), [(-1, None, 10), (5, 4, 10), (0, None, 0)])
def test_invalid_range_is_refused(
    store: ArtifactStore, make_blob: MakeBlob, start: int, end: int | None, chunk: int
) -> None:
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    with pytest.raises(InvalidInput):
        store.read_range(digest, start, end, chunk_size=chunk)


def test_concurrent_puts_of_the_same_blob(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(DATA * 20)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: store.put_file(path, digest), range(8)))
    assert all(isinstance(r, bool) for r in results)
    assert sum(results) >= 1
    if isinstance(store, LocalArtifactStore):
        assert sum(results) == 1  # hard-link publication is exclusive
    assert store.list_digests() == [digest]
    assert _read(store, digest) == DATA * 20
    assert store.cleanup_temporaries(older_than_s=-60) == 0


def test_local_path_only_for_local_stores(store: ArtifactStore, make_blob: MakeBlob) -> None:
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    local = store.local_path(digest)
    if isinstance(store, LocalArtifactStore):
        assert local is not None
        assert local.read_bytes() == DATA
        assert local.parent.name == digest[:2]
    else:
        assert local is None


def test_url_is_set(store: ArtifactStore) -> None:
    assert store.url
    assert "testing" not in store.url


def _plant_temporary(store: ArtifactStore) -> None:
    """What a writer killed mid-upload leaves behind."""
    if isinstance(store, LocalArtifactStore):
        (store.root / "tmp" / "crashed.part").write_bytes(b"partial")
    else:
        assert isinstance(store, FsspecArtifactStore)
        with store._fs.open(f"{store._tmp}/crashed", "wb") as handle:
            handle.write(b"partial")


# --- local specifics -------------------------------------------------------------------


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from modelfleet.registry.artifacts import open_artifact_store
    # Reads a FIFO the test keeps open: the upload stays in progress until the kill.
    open_artifact_store(sys.argv[1]).put_file(Path(sys.argv[2]), sys.argv[3])
    """
)


def test_writer_sigkilled_mid_upload_leaves_only_a_swept_temporary(
    tmp_path: Path, make_blob: MakeBlob
) -> None:
    """A real writer process killed mid-upload (not a planted file): no blob appears, the
    listing ignores its temporary, and the sweep removes it once old enough."""
    root = tmp_path / "a"
    store = open_artifact_store(str(root))
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    fifo = tmp_path / "upload.fifo"
    os.mkfifo(fifo)
    unfinished = "ab" * 32
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(root), str(fifo), unfinished]
    )
    deadline = time.monotonic() + 60

    def waiting(what: str) -> None:
        assert writer.poll() is None, f"the writer ended before it was killed ({what})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)

    try:
        while True:  # non-blocking open: fails (ENXIO) until the writer opens its end
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                waiting("the writer to open its source")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as feed:
            feed.write(b"x" * (3 * COPY_CHUNK))
            feed.flush()
            while not any(p.stat().st_size > 0 for p in (root / "tmp").iterdir()):
                waiting("the upload's temporary")
            writer.send_signal(signal.SIGKILL)
            writer.wait(30)
    finally:
        writer.kill()
        writer.wait(30)
    assert writer.returncode == -signal.SIGKILL
    (leftover,) = (root / "tmp").iterdir()
    assert not store.exists(unfinished)
    assert store.list_digests() == [digest]
    assert store.cleanup_temporaries(older_than_s=3600) == 0  # may still be an upload
    hour_ago = time.time() - 3601
    os.utime(leftover, (hour_ago, hour_ago))
    assert store.cleanup_temporaries(older_than_s=3600) == 1
    assert list((root / "tmp").iterdir()) == []
    assert store.list_digests() == [digest]


def test_local_layout_and_file_url(tmp_path: Path, make_blob: MakeBlob) -> None:
    store = open_artifact_store(f"file://{tmp_path}/a")
    assert isinstance(store, LocalArtifactStore)
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    assert (tmp_path / "a" / "blobs" / "sha256" / digest[:2] / digest).read_bytes() == DATA
    assert os.listdir(tmp_path / "a" / "tmp") == []


def test_local_stray_files_are_not_listed(tmp_path: Path, make_blob: MakeBlob) -> None:
    store = LocalArtifactStore(tmp_path)
    path, digest = make_blob(DATA)
    store.put_file(path, digest)
    wrong_shard = tmp_path / "blobs" / "sha256" / "zz"
    wrong_shard.mkdir()
    (wrong_shard / digest).write_bytes(DATA)
    (tmp_path / "blobs" / "sha256" / digest[:2] / "notes.txt").write_text("x")
    assert store.list_digests() == [digest]


def test_remote_file_url_is_refused() -> None:
    with pytest.raises(InvalidInput):
        open_artifact_store("file://otherhost/data")


# --- fsspec specifics ------------------------------------------------------------------


def test_s3_endpoint_from_environment(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, make_blob: MakeBlob
) -> None:
    monkeypatch.setenv("MODELFLEET_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    store = open_artifact_store("s3://modelfleet-test/from-env")
    path, digest = make_blob(b"via env")
    store.put_file(path, digest)
    assert store.exists(digest)
    assert store.url == "s3://modelfleet-test/from-env"


def test_stores_sharing_a_bucket_see_each_other(
    s3_options: dict[str, Any], make_blob: MakeBlob
) -> None:
    """Two hub replicas on one bucket: no listing cache may hide the other's writes."""
    url = "s3://modelfleet-test/shared"
    first = open_artifact_store(url, storage_options=s3_options)
    second = open_artifact_store(url, storage_options=s3_options)
    assert second.list_digests() == []
    path, digest = make_blob(b"shared")
    first.put_file(path, digest)
    assert second.exists(digest)
    assert second.list_digests() == [digest]
    assert first.delete(digest)
    assert not second.exists(digest)
    assert second.list_digests() == []


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("https://user:secret@host/path?token=abc", "https://user:***@host/path"),
        ("/plain/path", "/plain/path"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_unreachable_store_fails_loudly() -> None:
    """An outage must raise StoreError, never look like an empty store."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_artifact_store(
        "s3://modelfleet-test/down",
        storage_options={
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "eu-west-1"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        },
    )
    with pytest.raises(StoreError):
        store.exists(hashlib.sha256(b"x").hexdigest())
    with pytest.raises(StoreError):
        store.list_digests()
