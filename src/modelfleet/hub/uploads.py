"""Spool an HTTP request body to a local file while hashing it and enforcing the limit."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from modelfleet.errors import ArtifactTooLarge, InvalidInput
from modelfleet.hub.registry import Upload


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
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".onnx", dir=tmp_dir)
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
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Upload(path=path, digest=hasher.hexdigest(), size=size)
