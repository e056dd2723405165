"""HTTP ``Range`` parsing for resumable downloads (one byte range, RFC 9110)."""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.errors import RangeNotSatisfiable


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """None means "send everything" (no header, or a form we do not serve partially)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable(f"empty suffix range {header!r}")
            return ByteRange(max(0, size - suffix), size)
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or start < 0 or end <= start:
        raise RangeNotSatisfiable(f"range {header!r} is outside the blob of {size} bytes")
    return ByteRange(start, min(end, size))
