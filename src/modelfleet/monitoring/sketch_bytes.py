"""Reading sketches that came over the network: the header is checked before the native
deserializer sees a byte.

DataSketches' deserializers trust their input. A frequent-items sketch allocates its hash
map from the ``lg_max_map_size`` byte of the header (2^30 slots from a 59-byte message:
gigabytes), and truncated or inconsistent bytes raise ``IndexError`` from deep inside.
Sites, SDK users and the hub only ever make sketches with this package's parameters
(:data:`~modelfleet.monitoring.profiles.KLL_K`, ``FREQ_LG_MAX``), so anything claiming
more is refused as bad input, with a message, before any allocation.

Header layouts (DataSketches serialization format, little-endian):

- KLL: byte 2 family id 15, bytes 4-5 ``k``, byte 6 ``m``;
- frequent items: byte 2 family id 10, byte 3 ``lg_max_map_size``, byte 4
  ``lg_cur_map_size``.
"""

from __future__ import annotations

import struct

from datasketches import frequent_strings_sketch, kll_doubles_sketch

from modelfleet.errors import InvalidInput

__all__ = ["MAX_SKETCH_BYTES", "read_frequent_items", "read_kll"]

#: The largest serialized sketch accepted (a KLL sketch with k=200 over any stream is
#: ~5 KiB; 96 frequent categories of 256-character names ~26 KiB).
MAX_SKETCH_BYTES = 64 * 1024
_KLL_FAMILY = 15
_FREQUENT_FAMILY = 10
#: The widest sketches accepted: this package makes k=200 and lg 7; a little room for
#: profiles made by a later version with finer settings, none for a memory bomb.
MAX_KLL_K = 1024
MAX_FREQUENT_LG = 10

#: What the native deserializers raise on inconsistent bytes.
_NATIVE_ERRORS = (RuntimeError, ValueError, IndexError, OverflowError, MemoryError)


def _check_size(raw: bytes, what: str, minimum: int) -> None:
    if len(raw) > MAX_SKETCH_BYTES:
        raise InvalidInput(f"{what}: sketch of {len(raw)} bytes exceeds {MAX_SKETCH_BYTES}")
    if len(raw) < minimum:
        raise InvalidInput(f"{what}: sketch is truncated ({len(raw)} bytes)")


def read_kll(raw: bytes, what: str) -> kll_doubles_sketch:
    """A KLL doubles sketch from untrusted bytes; ``InvalidInput`` for anything else."""
    _check_size(raw, what, 8)
    if raw[2] != _KLL_FAMILY:
        raise InvalidInput(f"{what}: not a KLL sketch (family {raw[2]})")
    (k,) = struct.unpack_from("<H", raw, 4)
    if not 8 <= k <= MAX_KLL_K or raw[6] != 8:
        raise InvalidInput(f"{what}: KLL parameters k={k}, m={raw[6]} are not accepted")
    try:
        return kll_doubles_sketch.deserialize(raw)
    except _NATIVE_ERRORS as exc:
        raise InvalidInput(f"{what}: not a KLL sketch: {exc}") from exc


def read_frequent_items(raw: bytes, what: str) -> frequent_strings_sketch:
    """A frequent-strings sketch from untrusted bytes; ``InvalidInput`` for anything else."""
    _check_size(raw, what, 8)
    if raw[2] != _FREQUENT_FAMILY:
        raise InvalidInput(f"{what}: not a frequent-items sketch (family {raw[2]})")
    lg_max, lg_cur = raw[3], raw[4]
    if not 3 <= lg_max <= MAX_FREQUENT_LG or lg_cur > lg_max:
        raise InvalidInput(
            f"{what}: frequent-items map size 2^{lg_max} (current 2^{lg_cur}) is not "
            f"accepted (at most 2^{MAX_FREQUENT_LG})"
        )
    try:
        return frequent_strings_sketch.deserialize(raw)
    except _NATIVE_ERRORS as exc:
        raise InvalidInput(f"{what}: not a frequent-items sketch: {exc}") from exc
