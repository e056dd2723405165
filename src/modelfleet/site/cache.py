"""Content-addressed model blobs on the site's disk: what lets a site restart without the hub.

A blob's file name is its sha256, and a file only ever appears under ``blobs/`` through
:meth:`BlobCache.commit`, which hashes it first and renames it into place atomically. So a
blob that exists was complete and correct when committed; a crash mid-download leaves at
most a partial file, which the next attempt resumes with an HTTP Range request or ``gc``
removes. What happens to a file after it was committed is not the cache's to trust: the
reconciler checks a cached blob (:meth:`BlobCache.intact`) before it loads it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from modelfleet.errors import DigestMismatch, InvalidInput, NotFound, StoreError
from modelfleet.registry.manifest import sha256_file

__all__ = ["BlobCache"]

_PREFIX = "sha256:"
_HEX = frozenset("0123456789abcdef")


def _hex(digest: str) -> str:
    """Bare hex from ``sha256:<hex>`` or ``<hex>``; anything else could escape the directory."""
    hexpart = digest.removeprefix(_PREFIX)
    if len(hexpart) != 64 or not _HEX.issuperset(hexpart):
        raise InvalidInput(f"digest {digest!r} is not a lowercase hex sha256")
    return hexpart


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; without it a power cut can forget the new directory entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobCache:
    """Blobs under ``root/blobs/sha256/<hex>``, downloads in progress under ``root/partial/``.

    Digests are accepted as ``sha256:<hex>`` or bare hex and returned prefixed, the form
    manifests use.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._partial = root / "partial"
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._partial.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create blob cache at {root}: {exc}") from exc

    def path(self, digest: str) -> Path:
        """Where the blob lives (whether or not it is there yet)."""
        return self._blobs / _hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def intact(self, digest: str, expected_size: int) -> bool:
        """Whether the committed blob still has ``expected_size`` bytes hashing to ``digest``.

        A blob is correct when committed; this checks it has not changed since (a damaged
        disk, someone editing the cache). A damaged blob is deleted, so that the next
        download fetches it again, and False is returned, as for a blob that is absent.
        """
        path = self.path(digest)
        try:
            actual, size = sha256_file(path)
        except NotFound:
            return False
        if actual == _hex(digest) and size == expected_size:
            return True
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete the damaged blob {path}: {exc}") from exc
        return False

    def partial_path(self, digest: str) -> Path:
        """Where a download in progress is written; its size is the offset to resume from."""
        return self._partial / _hex(digest)

    def commit(self, digest: str, expected_size: int) -> Path:
        """Move a finished download into place if, and only if, it hashes to ``digest``.

        A mismatching partial is deleted rather than kept for resume: its bytes are wrong
        somewhere, and resuming would only append to the wrong prefix.
        """
        hexpart = _hex(digest)
        partial = self._partial / hexpart
        actual, size = sha256_file(partial)
        if actual != hexpart or size != expected_size:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise DigestMismatch(
                f"download of sha256:{hexpart} has {size} bytes hashing to sha256:{actual}; "
                f"expected {expected_size} bytes; discarded"
            )
        final = self._blobs / hexpart
        try:
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            # Read-only: nothing should ever modify a content-addressed file in place.
            partial.chmod(0o444)
            os.replace(partial, final)
            _fsync_dir(self._blobs)
        except FileNotFoundError as exc:
            raise NotFound(f"download of sha256:{hexpart} vanished while committing") from exc
        except OSError as exc:
            raise StoreError(f"cannot commit sha256:{hexpart}: {exc}") from exc
        return final

    def digests(self) -> list[str]:
        """Every committed blob, sorted."""
        return [_PREFIX + hexpart for hexpart in self._names(self._blobs)]

    def gc(self, keep: set[str]) -> list[str]:
        """Delete blobs and partial downloads not in ``keep``; returns the paths removed.

        ``keep`` must include downloads in flight, or their partial files go too.
        """
        kept = {_hex(digest) for digest in keep}
        removed: list[str] = []
        for directory in (self._blobs, self._partial):
            for name in self._names(directory):
                if name in kept:
                    continue
                target = directory / name
                try:
                    target.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StoreError(f"cannot delete {target}: {exc}") from exc
                removed.append(str(target))
        return removed

    def size_bytes(self) -> int:
        """Disk used by blobs and partial downloads together."""
        total = 0
        for directory in (self._blobs, self._partial):
            for name in self._names(directory):
                with contextlib.suppress(FileNotFoundError):
                    total += (directory / name).stat().st_size
        return total

    @staticmethod
    def _names(directory: Path) -> list[str]:
        """Sorted file names; stray files that are not hex digests are ignored, not deleted."""
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise StoreError(f"cannot list {directory}: {exc}") from exc
        return sorted(n for n in names if len(n) == 64 and _HEX.issuperset(n))
