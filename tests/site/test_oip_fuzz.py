"""Hostile input at ``/infer``: only 2xx/4xx answers, the server survives, memory stays bounded."""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfleet.site.repository import ModelRepository
from modelfleet.site.server import InferenceServer
from tests.site.test_oip_conformance import DATATYPES, LiveSite, add_model, identity_model, load

MODELS = ["add", "id_bytes", "id_int64", "id_bool", "id_fp16"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
shapes = st.lists(st.integers(min_value=-2, max_value=5), max_size=4) | json_values
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["X", "x", "Y", ""]) | st.text(max_size=4),
        "datatype": st.sampled_from([*DATATYPES, "FP128", ""]) | json_values,
        "shape": shapes,
        "data": json_values
        | st.lists(st.integers(-300, 300) | st.floats() | st.text(max_size=2), max_size=20),
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-5, 64) | json_values}
        )
        | json_values,
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=5) | json_values,
        "parameters": json_values,
        "inputs": st.lists(tensors, max_size=3) | json_values,
        "outputs": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["y", "z", "Y", "q"]) | json_values}),
            max_size=3,
        )
        | json_values,
    },
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    repository = ModelRepository()
    repository.activate(load(add_model(root / "add.onnx", 1.0), "add", 1, max_batch_size=8))
    for datatype in ("BYTES", "INT64", "BOOL", "FP16"):
        name = f"id_{datatype.lower()}"
        repository.activate(load(identity_model(root / f"{name}.onnx", datatype), name, 1))
    live = LiveSite(InferenceServer(repository))
    try:
        yield live
    finally:
        live.close()


def post(site: LiveSite, model: str, body: bytes, headers: dict[str, str]) -> int:
    answer = site.client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    if answer.status_code >= 400:
        assert isinstance(answer.json()["error"], str)
    return answer.status_code


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), doc=requests)
def test_structured_garbage_is_never_5xx(site: LiveSite, model: str, doc: dict[str, Any]) -> None:
    status = post(site, model, json.dumps(doc).encode(), {})
    assert 200 <= status < 500


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    doc=requests,
    tail=st.binary(max_size=64),
    header=st.one_of(
        st.none(),
        st.integers(min_value=-3, max_value=400).map(str),
        st.text(alphabet="0123456789-x ", max_size=6),
    ),
)
def test_binary_framing_garbage_is_never_5xx(
    site: LiveSite, model: str, doc: dict[str, Any], tail: bytes, header: str | None
) -> None:
    head = json.dumps(doc).encode()
    headers = {}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header.strip() or "0"
    status = post(site, model, head + tail, headers)
    assert 200 <= status < 500


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=256))
def test_raw_bytes_are_never_5xx(site: LiveSite, body: bytes) -> None:
    assert 200 <= post(site, "add", body, {}) < 500


def test_memory_stays_bounded_under_bad_requests(site: LiveSite) -> None:
    bad = [
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,2,3]}]}',
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[100000000,4],"data":[]}]}',
        b"{" * 5000,
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[2,4],"data":' + b"[1.5," * 8 + b"]}]}",
    ]
    good = b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    for body in [*bad, good]:  # warm every path once
        post(site, "add", body, {})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(400):
        for body in bad:
            assert post(site, "add", body, {}) == 400
        assert post(site, "add", good, {}) == 200
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grown_mb = (after - before) / 1024
    print(f"peak RSS grew {grown_mb:.1f} MiB over 2000 requests")
    assert grown_mb < 64
    assert site.client.get("/v2/health/live").status_code == 200
