"""The artifact store on any fsspec filesystem, chiefly S3-compatible object stores.

Object stores have no rename, so a blob is uploaded to ``<root>/tmp/<uuid>``, checked, then
copied server-side to ``<root>/blobs/sha256/ab/<digest>`` and the temporary deleted: readers
see either nothing or the whole verified blob. Listing caches are disabled because several
hub replicas share one bucket and a stale cache would hide another replica's blobs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import fsspec

from modelfleet.errors import DigestMismatch, InvalidInput, ModelfleetError, NotFound, StoreError
from modelfleet.registry.artifacts import (
    COPY_CHUNK,
    DIGEST_RE,
    ArtifactStore,
    RangeReader,
    check_existing,
    check_range,
    copy_hashing,
    disk_full,
    mask_url,
    open_source,
    validate_digest,
)

__all__ = ["FsspecArtifactStore"]

#: Read-ahead for remote reads: large enough that a big blob is not thousands of GETs.
MIN_READ_BLOCK = 8 << 20


def _backend_errors() -> tuple[type[BaseException], ...]:
    """The exception types a remote filesystem may leak besides OSError."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
        )

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass  # no S3 support installed: nothing of it to catch
    try:
        from aiohttp import ClientError as HttpClientError

        errors.append(HttpClientError)
    except ImportError:
        pass  # no HTTP filesystem support installed
    return tuple(errors)


_BACKEND_ERRORS = _backend_errors()


class FsspecArtifactStore(ArtifactStore):
    """Blobs at ``<url>/blobs/sha256/ab/<digest>``; temporaries at ``<url>/tmp/<uuid>``."""

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = mask_url(url)
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        options.update(storage_options or {})
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:
            raise StoreError(
                f"no filesystem driver for {self.url}: {exc} "
                "(for s3:// install the extra: pip install 'modelfleet[s3]')"
            ) from exc
        except ValueError as exc:
            raise InvalidInput(f"unsupported artifact store URL {self.url}: {exc}") from exc
        self._fs: Any = fs
        self._root = str(root).rstrip("/")
        self._blobs = f"{self._root}/blobs/sha256"
        self._tmp = f"{self._root}/tmp"  # noqa: S108 - a key inside the store, not /tmp

    @contextmanager
    def _errors(self, action: str, digest: str | None = None) -> Iterator[None]:
        """Translate backend exceptions so callers only ever catch ours."""
        try:
            yield
        except ModelfleetError:
            raise
        except FileNotFoundError as exc:
            if digest is None:
                raise StoreError(f"{action} in {self.url} failed: {exc}") from exc
            raise NotFound(f"artifact sha256:{digest} is not in {self.url}") from exc
        except _BACKEND_ERRORS as exc:
            full = disk_full(exc, self.url, action)  # a local or mounted filesystem is full
            if full is not None:
                raise full from exc
            raise StoreError(f"{action} in {self.url} failed: {exc}") from exc

    def _key(self, digest: str) -> str:
        validate_digest(digest)
        return f"{self._blobs}/{digest[:2]}/{digest}"

    def put_file(self, path: Path, digest: str) -> bool:
        final = self._key(digest)
        if self.exists(digest):
            check_existing(path, digest)
            return False
        tmp = f"{self._tmp}/{uuid.uuid4().hex}"
        try:
            with (
                open_source(path) as src,
                self._errors(f"uploading sha256:{digest}"),
                self._fs.open(tmp, "wb") as dst,
            ):
                actual = copy_hashing(src, dst)
            if actual != digest:
                raise DigestMismatch(
                    f"{path} hashes to sha256:{actual}, not the expected sha256:{digest}"
                )
            with self._errors(f"publishing sha256:{digest}"):
                # Not exclusive: two racing writers may both report True; the bytes are equal.
                if self._fs.exists(final):
                    return False
                self._fs.copy(tmp, final)
            return True
        finally:
            self._remove_quietly(tmp)

    def _remove_quietly(self, key: str) -> None:
        """Best-effort removal: a leftover temporary is harmless and swept later."""
        try:
            self._fs.rm_file(key)
        except FileNotFoundError:
            pass  # already gone
        except _BACKEND_ERRORS:
            pass  # left for the sweep (see docstring)

    def exists(self, digest: str) -> bool:
        key = self._key(digest)
        # Not fs.isfile(): backends swallow every error there, so an unreachable store
        # would look empty instead of failing.
        with self._errors(f"checking sha256:{digest}"):
            try:
                info = self._fs.info(key)
            except FileNotFoundError:
                return False
        return bool(info.get("type") != "directory")

    def size(self, digest: str) -> int:
        key = self._key(digest)
        with self._errors(f"sizing sha256:{digest}", digest):
            info = self._fs.info(key)
        if info.get("type") == "directory":
            raise NotFound(f"artifact sha256:{digest} is not in {self.url}")
        return int(info["size"])

    def read_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk_size: int = COPY_CHUNK
    ) -> Iterator[bytes]:
        key = self._key(digest)
        check_range(start, end, chunk_size)
        with self._errors(f"opening sha256:{digest}", digest):
            handle = self._fs.open(key, "rb", block_size=max(chunk_size, MIN_READ_BLOCK))
        return RangeReader(handle, start, end, chunk_size, _BACKEND_ERRORS, f"sha256:{digest}")

    def delete(self, digest: str) -> bool:
        key = self._key(digest)
        if not self.exists(digest):
            return False
        with self._errors(f"deleting sha256:{digest}"):
            try:
                self._fs.rm_file(key)
            except FileNotFoundError:
                return False
        return True

    def list_digests(self) -> list[str]:
        with self._errors("listing blobs"):
            try:
                keys = self._fs.find(self._blobs)
            except FileNotFoundError:
                return []
        found = set()
        for key in keys:
            shard, _, name = str(key).rstrip("/").rpartition("/")
            if DIGEST_RE.fullmatch(name) and shard.rpartition("/")[2] == name[:2]:
                found.add(name)
        return sorted(found)

    def modified_at(self, digest: str) -> float | None:
        key = self._key(digest)
        try:
            info = self._fs.info(key)
        except FileNotFoundError:
            return None
        except _BACKEND_ERRORS:
            return None  # unknown: the sweep leaves the blob for a later start
        return _modified_at(info)

    def local_path(self, digest: str) -> Path | None:
        validate_digest(digest)
        return None

    def cleanup_temporaries(self, older_than_s: float = 3600.0) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        with self._errors("listing temporaries"):
            try:
                entries = self._fs.find(self._tmp, detail=True)
            except FileNotFoundError:
                return 0
            for key, info in entries.items():
                modified = _modified_at(info)
                if modified is not None and modified < cutoff:
                    try:
                        self._fs.rm_file(key)
                    except FileNotFoundError:
                        continue
                    removed += 1
        return removed


def _modified_at(info: Mapping[str, Any]) -> float | None:
    """A POSIX timestamp from whichever field this backend uses; None when it has none."""
    for field in ("LastModified", "mtime", "created", "last_modified"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None
