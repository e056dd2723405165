"""The tensor envelope refuses generated, hostile bytes with ``InvalidInput`` only, and the
hub answers them 4xx without touching the round's stored updates.

``wire.unpack`` is where a site's bytes first become arrays: crafted shapes ([2**62, 4],
[2**70], [0, 2**70], negative dims, booleans), dtype junk, truncated payloads, wrong
header lengths, deeply nested headers. Its documented error is :class:`InvalidInput` (a
``modelfleet.errors`` class the hub answers 400); a ``ValueError``, ``OverflowError``,
``IndexError``, ``RecursionError`` or ``MemoryError`` escaping it would be a 500.

Through HTTP: generated envelopes posted to a round's update endpoint as an enrolled,
selected site get 4xx (or 200 when one happens to be a valid update); after each refused
post the round's stored updates and payloads are exactly what they were.

Derandomized for CI; for a deeper, random search::

    MODELFLEET_FUZZ_EXAMPLES=2000 MODELFLEET_FUZZ_RANDOM=1 pytest tests/federation/test_wire_fuzz.py
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from modelfleet.errors import InvalidInput
from modelfleet.federation import wire
from tests.federation.conftest import fl_fleet
from tests.fuzzing import fuzz_settings

FUZZ = fuzz_settings(150)

_dim = st.one_of(
    st.integers(0, 6),
    st.sampled_from([-1, -(2**63), 2**31, 2**32 + 1, 2**62, 2**63, 2**64, 2**70]),
    st.sampled_from([True, 1.5, "3", None, [2]]),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_spec = st.one_of(
    st.fixed_dictionaries(
        {
            "name": st.one_of(st.sampled_from(["delta", "w"]), _json),
            "dtype": st.one_of(
                st.sampled_from(["float32", "float64"]),
                st.sampled_from(["float16", "int8", "<f4", "object", "", "V8"]),
                _json,
            ),
            "shape": st.one_of(st.lists(_dim, max_size=5), _json),
        }
    ),
    _json,
)


def _frame(header: bytes, payload: bytes, declared: int | None = None) -> bytes:
    length = len(header) if declared is None else declared
    return wire.MAGIC + struct.pack("<I", length % 2**32) + header + payload


def _sane_size(spec: Any) -> int:
    """How many payload bytes ``spec`` needs, when that is a small honest number."""
    try:
        count = int(np.prod([int(d) for d in spec["shape"]], dtype=object))
        itemsize = {"float32": 4, "float64": 8}[spec["dtype"]]
    except (KeyError, TypeError, ValueError, OverflowError):
        return 0
    return count * itemsize if 0 <= count <= 4096 else 0


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """Mostly well-framed envelopes with hostile content; sometimes broken framing."""
    kind = draw(st.sampled_from(["specs", "specs", "specs", "header", "nested", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=64))
    if kind == "nested":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        return _frame(b"[" * depth + b"]" * depth, b"")
    if kind == "header":
        return _frame(draw(st.binary(max_size=64)), draw(st.binary(max_size=16)))
    specs = draw(st.lists(_spec, max_size=3))
    meta = draw(st.one_of(st.just({"attempt": 1, "num_examples": 10}), _json))
    header = json.dumps({"meta": meta, "arrays": specs}).encode()
    needed = sum(_sane_size(s) for s in specs)
    payload = bytes(draw(st.sampled_from([needed, needed, max(0, needed - 1), needed + 4])))
    declared = draw(st.sampled_from([None, None, len(header) + 1, len(header) - 1, 2**32 - 1]))
    return _frame(header, payload, declared)


def _craft(shape: Any, payload: bytes = b"\0" * 16, dtype: Any = "float32") -> bytes:
    spec = {"name": "delta", "dtype": dtype, "shape": shape}
    header = json.dumps({"meta": {"attempt": 1, "num_examples": 10}, "arrays": [spec]})
    return _frame(header.encode(), payload)


_TWICE = _frame(
    json.dumps(
        {"meta": {}, "arrays": [{"name": "d", "dtype": "float32", "shape": []}] * 2}
    ).encode(),
    b"\0" * 8,
)


@FUZZ
@given(body=envelopes())
@example(body=_craft([2**62, 4]))
@example(body=_craft([2**70]))
@example(body=_craft([-1]))
@example(body=_craft([0, 2**70], b""))  # numpy: "Maximum allowed dimension exceeded"
@example(body=_craft([0, 2**40, 2**40], b""))  # numpy: "array is too big"
@example(body=_craft([4], b"\0" * 15))  # truncated
@example(body=_craft([2], b"\0" * 9))  # trailing byte
@example(body=_craft([1], dtype=["float32"]))
@example(body=_TWICE)  # the same name twice: refused, not the later one silently kept
@example(body=_frame(b"[" * 100_000 + b"]" * 100_000, b""))  # RecursionError in json
def test_unpack_raises_only_invalid_input(body: bytes) -> None:
    try:
        meta, arrays = wire.unpack(body)
    except InvalidInput:
        return
    assert isinstance(meta, dict)
    consumed = 8 + struct.unpack("<I", body[4:8])[0] + sum(a.nbytes for a in arrays.values())
    assert consumed == len(body)  # every byte accounted for, none invented
    for array in arrays.values():
        assert array.dtype in (np.dtype("<f4"), np.dtype("<f8"))


@FUZZ
@given(
    arrays=st.dictionaries(
        st.text(max_size=8),
        st.lists(st.integers(0, 4), max_size=3).map(
            lambda shape: np.arange(int(np.prod(shape)), dtype="f4").reshape(shape)
        ),
        max_size=3,
    )
)
def test_what_pack_writes_unpack_reads_back(arrays: dict[str, np.ndarray]) -> None:
    _, back = wire.unpack(wire.pack({"n": 1}, arrays))
    assert back.keys() == arrays.keys()
    for name, array in arrays.items():
        assert back[name].shape == array.shape
        assert (back[name] == array).all()


_META_KEYS = st.sampled_from(["attempt", "num_examples", "metrics"])


def _stored(hub: Any, job: str) -> list[tuple[Any, ...]]:
    repo = hub.ctx.federation.repo
    rows = [(r.site, r.attempt, r.kind, r.num_examples, r.metrics) for r in repo.list_updates(job)]
    payloads = [bytes(p) for _, p in repo.iter_payloads(job, 1)]
    return [*rows, *payloads]


def _update(meta: Any, delta: np.ndarray) -> bytes:
    return wire.pack(meta, {"delta": delta})


def test_generated_updates_get_4xx_and_leave_the_round_as_it_was(hub_factory, tmp_path) -> None:
    """Two sites selected, only s0 posts: the round stays open through every example."""
    hub, tokens, spec = fl_fleet(hub_factory, tmp_path, sites=2)
    job = {"model": "iris", "data": "iris", "rounds": 1, "min_sites": 2, "id": "fuzz"}
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()
    url = "/api/v1/federation/jobs/fuzz/rounds/1/updates"
    headers = hub.headers(tokens["s0"])
    size = spec.size()
    good_meta = {"attempt": 1, "num_examples": 10, "metrics": {}}
    hostile_updates = st.one_of(
        envelopes(),
        st.builds(
            _update,
            st.one_of(
                st.just(good_meta),
                st.dictionaries(st.text(max_size=8), _json),
                st.builds(lambda m: good_meta | m, st.dictionaries(_META_KEYS, _json)),
            ),
            st.sampled_from([size, size - 1, size + 1, 0]).map(lambda n: np.zeros(n, "f4")),
        ),
    )
    failures: list[str] = []

    @FUZZ
    @given(body=hostile_updates)
    @example(body=_craft([size]))
    @example(body=_craft([0, 2**70], b""))
    @example(body=_update(good_meta | {"metrics": {"loss": 2**64}}, np.zeros(size, "f4")))
    @example(body=_update(good_meta | {"metrics": {"loss": 10**400}}, np.zeros(size, "f4")))
    @example(body=_update(good_meta | {"num_examples": 2**70}, np.zeros(size, "f4")))
    def post(body: bytes) -> None:
        before = _stored(hub, "fuzz")
        answer = hub.client.post(url, content=body, headers=headers)
        if answer.status_code == 200:
            return
        if not 400 <= answer.status_code < 500:
            failures.append(f"{answer.status_code} {answer.text[:200]} for {body[:120]!r}")
        elif _stored(hub, "fuzz") != before:
            failures.append(f"refused ({answer.status_code}) but stored: {body[:120]!r}")

    post()
    assert not failures, "\n".join(failures[:5])
    # Still open and taking a valid update from the other site.
    good = _update(good_meta, np.zeros(size, "f4"))
    answer = hub.client.post(url, content=good, headers=hub.headers(tokens["s1"]))
    assert answer.status_code == 200, answer.text
