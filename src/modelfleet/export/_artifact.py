"""Where an exported model lands on disk, and the check every export passes before it lands.

Exports write into a scratch directory next to the destination and move the file into place
only after ``onnx.checker`` accepted it: a failed or invalid export never leaves a half-written
or unloadable file at the path the user asked for, and the final move is atomic because it
stays on one filesystem.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

from modelfleet.errors import InvalidArtifact, InvalidInput

_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_MESSAGE = 300
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def summarize(exc: BaseException) -> str:
    """The root cause of an exporter's error in one short line.

    Exporters wrap the real problem ("a and b must have same reduction dim") in generic,
    colourised, multi-page errors ("Failed to export the model with torch.export..."); the
    whole chain stays reachable as ``__cause__`` of the error raised from it.
    """
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = _ANSI_ESCAPE.sub("", str(root)).strip()
    first = text.splitlines()[0] if text else repr(root)
    if len(first) > _MAX_MESSAGE:
        first = first[: _MAX_MESSAGE - 3] + "..."
    return f"{type(root).__name__}: {first}"


def save(path: str | Path | None, name: str, write: Callable[[Path], None]) -> Path:
    """Run ``write`` and land its checked output at ``path``, or at a fresh temp file.

    A fresh file is reserved with ``mkstemp`` rather than just named, so two exports running at
    the same time never pick the same path; it is removed again if the export fails.
    """
    if path is not None:
        dest = Path(path).expanduser()
        if dest.is_dir():
            raise InvalidInput(
                f"export path {dest} is a directory; give a file name like model.onnx"
            )
        if not dest.parent.is_dir():
            raise InvalidInput(f"cannot write {dest}: directory {dest.parent} does not exist")
        return _write_checked(dest, write)
    prefix = _UNSAFE_FILENAME_CHARS.sub("_", name).strip("._") or "model"
    fd, reserved = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".onnx")
    os.close(fd)
    try:
        return _write_checked(Path(reserved), write)
    except BaseException:
        Path(reserved).unlink(missing_ok=True)
        raise


def _write_checked(dest: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` produce the model in a scratch file, check it, then move it onto ``dest``.

    Anything beside the single ``.onnx`` file (external weight files for models past the 2 GB
    protobuf limit) is refused: the registry stores and signs one self-contained artifact.
    """
    try:
        scratch_dir = tempfile.TemporaryDirectory(prefix=".modelfleet-export-", dir=dest.parent)
    except OSError as exc:
        raise InvalidInput(f"cannot write to {dest.parent}: {exc}") from exc
    with scratch_dir as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        write(scratch_file)
        if not scratch_file.is_file():
            raise InvalidArtifact("the exporter finished without writing a model file")
        extra = sorted(p.name for p in Path(scratch).iterdir() if p != scratch_file)
        if extra:
            raise InvalidArtifact(
                "the exported model keeps its weights in separate files "
                f"({', '.join(extra)}); modelfleet artifacts must be one self-contained .onnx "
                "file under 2 GB"
            )
        try:
            # A path rather than a loaded proto, so the checker also validates what is on disk.
            onnx.checker.check_model(str(scratch_file))
        except onnx.checker.ValidationError as exc:
            raise InvalidArtifact(f"the exported model fails onnx.checker: {exc}") from exc
        try:
            os.replace(scratch_file, dest)
        except OSError as exc:
            raise InvalidInput(f"cannot write {dest}: {exc}") from exc
    return dest
