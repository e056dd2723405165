"""Files that hold secrets: created with mode 0600 from the first byte, never overwritten.

Replacing a key silently (a second ``hub init``, two processes racing at enrollment) would
orphan everything that trusted the old one, so a secret file is written to a 0600 temporary
and hard-linked into place: the link fails if the file appeared meanwhile, and readers never
see a partly written file.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from modelfleet.errors import Conflict, StoreError

__all__ = ["write_new_private_file", "write_public_file"]


def write_new_private_file(path: Path, data: bytes, what: str) -> None:
    """Create ``path`` (0600) holding ``data``; :class:`Conflict` if it exists already."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_fd(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), data)
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise Conflict(f"{what} {path} already exists; refusing to overwrite it") from exc
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # No hard links on this filesystem: an exclusive create keeps "never overwrite".
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError as exists:
                raise Conflict(f"{what} {path} already exists; refusing to overwrite it") from (
                    exists
                )
            _write_fd(fd, data)
    except OSError as exc:
        raise StoreError(f"cannot write {what} {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_public_file(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` atomically (mode 0644): a certificate, a CA bundle."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_fd(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), data)
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {what} {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _write_fd(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
