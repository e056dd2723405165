"""Content-addressed artifact stores: a local directory, or any fsspec URL (S3-compatible).

A blob is named by the lowercase hex sha256 of its bytes, so a name can never point at
different content. Writers stream into a temporary object and re-hash while copying: the
final name only ever appears for bytes that match it, and a crash leaves at most a
temporary behind (see :meth:`ArtifactStore.cleanup_temporaries`), never a half blob.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from modelfleet.errors import (
    DigestMismatch,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    StoreError,
)

__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "disk_full",
    "mask_url",
    "open_artifact_store",
    "validate_digest",
]

DIGEST_RE = re.compile(r"[0-9a-f]{64}")
COPY_CHUNK = 1 << 20
#: Env var naming the S3 endpoint (MinIO, Ceph, moto...); AWS_* vars are read by botocore.
S3_ENDPOINT_ENV = "MODELFLEET_S3_ENDPOINT_URL"


#: The errnos that mean "this disk has no room": ENOSPC, and a quota (EDQUOT) is the same to
#: the caller (free space or move the store, then push again).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException, store: str, what: str) -> InsufficientStorage | None:
    """The 507 for an OSError that says the disk is full, else None (the caller keeps its
    own translation). Named here once so the local and the fsspec stores say the same."""
    if not isinstance(exc, OSError) or exc.errno not in FULL_ERRNOS:
        return None
    return InsufficientStorage(
        f"the hub's artifact store {store} is full ({exc.strerror or exc}) while {what}; "
        "nothing was kept: free space there (or move the store to a larger volume) and "
        "push again"
    )


def validate_digest(digest: str) -> str:
    """Refuse anything but 64 lowercase hex chars before it becomes part of a path or key."""
    if not isinstance(digest, str) or DIGEST_RE.fullmatch(digest) is None:
        raise InvalidInput(
            f"invalid artifact digest {digest!r}: expected 64 lowercase hex characters (sha256)"
        )
    return digest


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    """Reject ranges that have no meaning rather than guessing one."""
    if start < 0:
        raise InvalidInput(f"range start must be >= 0, got {start}")
    if end is not None and end < start:
        raise InvalidInput(f"range end ({end}) must not be before its start ({start})")
    if chunk_size <= 0:
        raise InvalidInput(f"chunk size must be positive, got {chunk_size}")


def mask_url(url: str) -> str:
    """Hide a password in the netloc and drop the query, where credentials tend to hide."""
    parts = urlsplit(url)
    if not parts.scheme or "://" not in url:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RangeReader(Iterator[bytes]):
    """Yields one byte range of an open file in chunks and closes it when exhausted.

    A class rather than a generator so that opening (and so ``NotFound``) happens when
    :meth:`ArtifactStore.read_range` is called, before an HTTP response has started, and so
    that an iterator dropped unstarted still closes its file via :meth:`close`.
    """

    def __init__(
        self,
        handle: IO[bytes],
        start: int,
        end: int | None,
        chunk_size: int,
        errors: tuple[type[BaseException], ...],
        describe: str,
    ) -> None:
        self._handle: IO[bytes] | None = handle
        self._remaining = None if end is None else end - start
        self._chunk_size = chunk_size
        self._errors = errors
        self._describe = describe
        try:
            if start:
                handle.seek(start)
        except errors as exc:
            self.close()
            raise StoreError(f"cannot seek in {describe}: {exc}") from exc

    def __next__(self) -> bytes:
        handle = self._handle
        if handle is None or self._remaining == 0:
            self.close()
            raise StopIteration
        want = (
            self._chunk_size if self._remaining is None else min(self._chunk_size, self._remaining)
        )
        try:
            data = handle.read(want)
        except self._errors as exc:
            self.close()
            raise StoreError(f"reading {self._describe} failed: {exc}") from exc
        if not data:
            self.close()
            raise StopIteration
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()

    def __del__(self) -> None:
        self.close()


class ArtifactStore(ABC):
    """Immutable blobs keyed by sha256; every method validates the digest first."""

    #: Where the store lives, with any password masked: safe to log and display.
    url: str

    @abstractmethod
    def put_file(self, path: Path, digest: str) -> bool:
        """Store a local file under ``digest``; True if new, False if it was already there.

        The bytes are re-hashed while copied; on a mismatch nothing is left behind and
        :class:`DigestMismatch` is raised. The blob becomes visible atomically.
        """

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """Whether a complete blob is stored under ``digest``."""

    @abstractmethod
    def size(self, digest: str) -> int:
        """Size in bytes; :class:`NotFound` if absent."""

    @abstractmethod
    def read_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk_size: int = COPY_CHUNK
    ) -> Iterator[bytes]:
        """Bytes ``[start, end)`` in chunks, clamped like a slice to the blob's size.

        :class:`NotFound` is raised by this call, not by the first ``next()``.
        """

    @abstractmethod
    def delete(self, digest: str) -> bool:
        """Remove the blob; True if it existed."""

    @abstractmethod
    def list_digests(self) -> list[str]:
        """Sorted digests of complete blobs; temporaries are never listed."""

    def modified_at(self, digest: str) -> float | None:
        """When the blob was stored or last re-put (POSIX time); None if absent or unknown.

        The orphan sweep (:mod:`modelfleet.hub.artifact_sweep`) only removes blobs older
        than the upload grace, so a blob published a moment ago by an upload whose version
        row is about to commit is never taken; None means "too young to judge".
        """
        return None

    @abstractmethod
    def local_path(self, digest: str) -> Path | None:
        """A real file path for the blob if the store is local (``NotFound`` if absent), else None.

        Lets a local consumer (onnxruntime on a site, checks on the hub) open the file in
        place instead of copying it; None means "use :meth:`read_range`".
        """

    @abstractmethod
    def cleanup_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete temporaries left by crashed writers; returns how many were removed.

        The age threshold keeps uploads that are still in progress safe.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _fsync_dir(directory: Path) -> None:
    """Persist a rename/link in ``directory``; skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename still happened
    finally:
        os.close(fd)


class LocalArtifactStore(ArtifactStore):
    """Blobs under ``root/blobs/sha256/ab/abcd...``; temporaries in ``root/tmp``.

    Temporaries share the blobs' filesystem so publishing is a link, never a copy.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)
        self._blobs = self.root / "blobs" / "sha256"
        self._tmp = self.root / "tmp"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create artifact store at {self.root}: {exc}") from exc

    def _path(self, digest: str) -> Path:
        validate_digest(digest)
        return self._blobs / digest[:2] / digest

    def put_file(self, path: Path, digest: str) -> bool:
        final = self._path(digest)
        if final.exists():
            check_existing(path, digest)
            _touch(final)  # young again: the orphan sweep leaves a blob being re-pushed
            return False
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            with open_source(path) as src:
                try:
                    with open(tmp, "xb") as dst:
                        actual = copy_hashing(src, dst)
                        dst.flush()
                        os.fsync(dst.fileno())
                except OSError as exc:
                    full = disk_full(exc, self.url, f"writing sha256:{digest}")
                    if full is not None:
                        raise full from exc
                    raise StoreError(f"cannot write {digest} into {self.url}: {exc}") from exc
            if actual != digest:
                raise DigestMismatch(
                    f"{path} hashes to sha256:{actual}, not the expected sha256:{digest}"
                )
            return self._publish(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def _publish(self, tmp: Path, final: Path) -> bool:
        """Make the blob visible exactly once, so concurrent writers agree on who stored it."""
        try:
            final.parent.mkdir(exist_ok=True)
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # No hard links here: fall back to replace, which is atomic but not exclusive.
                existed = final.exists()
                os.replace(tmp, final)
                _fsync_dir(final.parent)
                return not existed
        except OSError as exc:
            full = disk_full(exc, self.url, f"publishing sha256:{final.name}")
            if full is not None:  # a new shard directory needs a block (or an inode)
                raise full from exc
            raise StoreError(f"cannot publish {final.name} in {self.url}: {exc}") from exc
        _fsync_dir(final.parent)
        return True

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def size(self, digest: str) -> int:
        path = self._path(digest)
        try:
            return path.stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"artifact sha256:{digest} is not in {self.url}") from exc
        except OSError as exc:
            raise StoreError(f"cannot stat sha256:{digest} in {self.url}: {exc}") from exc

    def read_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk_size: int = COPY_CHUNK
    ) -> Iterator[bytes]:
        path = self._path(digest)
        check_range(start, end, chunk_size)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by RangeReader
        except FileNotFoundError as exc:
            raise NotFound(f"artifact sha256:{digest} is not in {self.url}") from exc
        except OSError as exc:
            raise StoreError(f"cannot open sha256:{digest} in {self.url}: {exc}") from exc
        return RangeReader(handle, start, end, chunk_size, (OSError,), f"sha256:{digest}")

    def delete(self, digest: str) -> bool:
        path = self._path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot delete sha256:{digest} from {self.url}: {exc}") from exc
        return True

    def list_digests(self) -> list[str]:
        try:
            found = [
                p.name
                for shard in self._blobs.iterdir()
                if shard.is_dir()
                for p in shard.iterdir()
                if DIGEST_RE.fullmatch(p.name) and p.name[:2] == shard.name
            ]
        except OSError as exc:
            raise StoreError(f"cannot list {self.url}: {exc}") from exc
        return sorted(found)

    def modified_at(self, digest: str) -> float | None:
        try:
            return self._path(digest).stat().st_mtime
        except OSError:
            return None

    def local_path(self, digest: str) -> Path | None:
        path = self._path(digest)
        if not path.is_file():
            raise NotFound(f"artifact sha256:{digest} is not in {self.url}")
        return path

    def cleanup_temporaries(self, older_than_s: float = 3600.0) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            entries = list(self._tmp.iterdir())
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"cannot list temporaries of {self.url}: {exc}") from exc
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot remove temporary {entry}: {exc}") from exc
        return removed


def _touch(path: Path) -> None:
    """Best effort: a store that refuses utime only loses the sweep's grace for this blob."""
    with contextlib.suppress(OSError):  # read-only or foreign-owned: older, not wrong
        os.utime(path)


def open_source(path: Path) -> IO[bytes]:
    """Open the caller's file, telling a missing file apart from a failing store."""
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise NotFound(f"no such file to store: {path}") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def copy_hashing(src: IO[bytes], dst: IO[bytes]) -> str:
    """Copy while hashing, so the digest describes exactly the bytes that were written."""
    hasher = hashlib.sha256()
    while chunk := src.read(COPY_CHUNK):
        hasher.update(chunk)
        dst.write(chunk)
    return hasher.hexdigest()


def check_existing(path: Path, digest: str) -> None:
    """A put of an existing blob still proves its bytes match, so caller bugs surface."""
    from modelfleet.registry.manifest import sha256_file

    actual, _ = sha256_file(path)
    if actual != digest:
        raise DigestMismatch(f"{path} hashes to sha256:{actual}, not the expected sha256:{digest}")


def _local_root(url: str) -> Path | None:
    """The directory a plain path or ``file://`` URL names; None for any other scheme."""
    if "://" not in url:
        return Path(url)
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise InvalidInput(f"file URL {url!r} names a remote host; use a local path")
    return Path(unquote(parts.path))


def s3_options_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Storage options for S3 URLs: only the endpoint; botocore reads AWS_* vars itself."""
    env = os.environ if env is None else env
    options: dict[str, Any] = {}
    endpoint = env.get(S3_ENDPOINT_ENV, "").strip()
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def open_artifact_store(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> ArtifactStore:
    """A plain path or ``file://`` URL gives a local store; any other fsspec URL a remote one.

    ``storage_options`` (passed to fsspec) win over those derived from the environment.
    """
    if not url or not url.strip():
        raise InvalidInput("artifact store URL is empty")
    root = _local_root(url)
    if root is not None:
        return LocalArtifactStore(root)
    from modelfleet.registry.artifacts_fsspec import FsspecArtifactStore

    options: dict[str, Any] = {}
    if urlsplit(url).scheme in ("s3", "s3a"):
        options.update(s3_options_from_env())
    options.update(storage_options or {})
    return FsspecArtifactStore(url, storage_options=options)
