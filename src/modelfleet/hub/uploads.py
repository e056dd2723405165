"""Spool an HTTP request body to a local file while hashing it and enforcing the limit.

A full spool disk is :class:`InsufficientStorage` (507) naming the directory, never a 500:
the partial spool file is removed before the answer, so the refused upload keeps no space.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from modelfleet.errors import ArtifactTooLarge, InsufficientStorage, InvalidInput
from modelfleet.hub.registry import Upload
from modelfleet.registry.artifacts import FULL_ERRNOS

#: What the spool's temporary files are called; the start-up sweep removes stale ones.
SPOOL_PREFIX = "upload-"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


async def spool(
    chunks: AsyncIterator[bytes],
    tmp_dir: Path,
    *,
    max_bytes: int,
    declared_length: int | None,
) -> Upload:
    """Write the body to ``tmp_dir``; the caller deletes ``Upload.path`` when done.

    Refuses early on a ``Content-Length`` over the limit and, for chunked bodies, as soon
    as the running total passes it, so an oversized upload never fills the disk.
    """
    if declared_length is not None and declared_length > max_bytes:
        raise ArtifactTooLarge(
            f"upload of {_human(declared_length)} exceeds the hub's limit of {_human(max_bytes)}"
        )
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".onnx", dir=tmp_dir)
    except OSError as exc:
        full = _spool_full(exc, tmp_dir)
        if full is None:
            raise
        raise full from exc
    path = Path(name)
    hasher = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ArtifactTooLarge(f"upload exceeds the hub's limit of {_human(max_bytes)}")
                hasher.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidInput("empty upload: send the ONNX file as the request body")
    except OSError as exc:
        path.unlink(missing_ok=True)
        full = _spool_full(exc, tmp_dir)
        if full is None:
            raise
        raise full from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Upload(path=path, digest=hasher.hexdigest(), size=size)


def _spool_full(exc: OSError, tmp_dir: Path) -> InsufficientStorage | None:
    """ENOSPC (or a quota) while spooling is the operator's to fix, so it is told as 507
    naming the directory; None for any other OSError (kept as it is: a 500 shows a bug)."""
    if exc.errno not in FULL_ERRNOS:
        return None
    return InsufficientStorage(
        f"the hub's upload spool directory {tmp_dir} is full ({exc.strerror or exc}); "
        "nothing was kept: free space there and push again"
    )
