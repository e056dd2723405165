"""Hostile input at ``/infer``: only 2xx/4xx answers, the server survives, memory stays bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfleet.sim.launcher import wait_http
from modelfleet.transport.listen import read_ready_file
from tests.site.test_oip_conformance import DATATYPES

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


class ServingProcess:
    """The site server with the fuzzed models in a child process of its own
    (``tests/site/serve_models.py``): what is measured of it is the server's alone."""

    def __init__(self, root: Path) -> None:
        ready = root / "ready.json"
        repo_root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.site.serve_models", str(root), str(ready)],
            cwd=repo_root,
            env={**os.environ, "PYTHONPATH": str(repo_root)},
        )
        deadline = time.monotonic() + 60
        report = read_ready_file(ready)
        while report is None:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "the server never reported its port"
            time.sleep(0.05)
            report = read_ready_file(ready)
        assert report.pid == self.proc.pid
        self.url = f"http://127.0.0.1:{report.port}"
        wait_http(f"{self.url}/v2/health/ready", 60)
        assert self.proc.poll() is None  # the answer was its own: it listens on that port
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def rss_bytes(self) -> int:
        """Resident memory of the serving process now (VmRSS), not a peak, not ours."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS in /proc/{self.proc.pid}/status")

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    live = ServingProcess(tmp_path_factory.mktemp("fuzz"))
    try:
        yield live
    finally:
        live.close()


def post(site: ServingProcess, model: str, body: bytes, headers: dict[str, str]) -> int:
    answer = site.client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    if answer.status_code >= 400:
        assert isinstance(answer.json()["error"], str)
    return answer.status_code


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), doc=requests)
def test_structured_garbage_is_never_5xx(
    site: ServingProcess, model: str, doc: dict[str, Any]
) -> None:
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
    site: ServingProcess, model: str, doc: dict[str, Any], tail: bytes, header: str | None
) -> None:
    head = json.dumps(doc).encode()
    headers = {}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header.strip() or "0"
    status = post(site, model, head + tail, headers)
    assert 200 <= status < 500


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=256))
def test_raw_bytes_are_never_5xx(site: ServingProcess, body: bytes) -> None:
    assert 200 <= post(site, "add", body, {}) < 500


def test_memory_stays_bounded_under_bad_requests(site: ServingProcess) -> None:
    values = b"1," * 100_000 + b"1"  # 100001 values for a [1, 4] tensor: 200 kB refused
    long_data = (
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[' + values + b"]}]}"
    )
    bad = [
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,2,3]}]}',
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[100000000,4],"data":[]}]}',
        b"{" * 5000,
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[2,4],"data":' + b"[1.5," * 8 + b"]}]}",
        long_data,
    ]
    good = b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'

    def rounds(n: int) -> None:
        for _ in range(n):
            for body in bad:
                assert post(site, "add", body, {}) == 400
            assert post(site, "add", good, {}) == 200

    rounds(200)  # every path warmed up, allocator pools at their working size
    before = site.rss_bytes()
    rounds(1000)  # 6000 requests, 5000 of them refused: ~200 MB of bad bodies in all
    after = site.rss_bytes()
    grown_mb = (after - before) / 2**20
    print(f"serving process RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB over 6000 requests")
    # Keeping even 5 % of each refused body would add ~10 MiB.
    assert grown_mb < 8
    assert site.client.get("/v2/health/live").status_code == 200
