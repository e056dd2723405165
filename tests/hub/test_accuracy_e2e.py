"""Ground truth end to end, real hub and site processes on loopback: predictions served,
labels posted to the sites, exact accuracy / MAE per site x version at the hub (API,
``modelfleet status``, ``/metrics``), a rollout failed by the accuracy gate, bad input
refused with 4xx, and no request id, input row or label value on the wire to the hub."""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from modelfleet.cli.main import app
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import trust_fleet_ca
from tests.monitoring.conftest import Fleet, infer_body, serving
from tests.waiting import wait_for

SENTINEL_INPUT = np.float32(2718.2818)
SENTINEL_LABEL = 31415.9265
SENTINEL_ID = "SENTINELREQ"


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def classifier(path: Path, bias: list[float]) -> Path:
    """label = argmax(X + bias) over 4 features: bias 0 predicts the largest feature; a
    large bias on feature 0 predicts class 0 whatever the input (a bad version)."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    b = helper.make_tensor("bias", TensorProto.FLOAT, [4], bias)
    nodes = [
        helper.make_node("Add", ["X", "bias"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    return save(helper.make_graph(nodes, "clf", [x], [y], initializer=[b]), path)


def regressor(path: Path) -> Path:
    """y = sum of the 4 features, one value per row."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1], [1.0, 1.0, 1.0, 1.0])
    node = helper.make_node("MatMul", ["X", "w"], ["y"])
    return save(helper.make_graph([node], "reg", [x], [y], initializer=[w]), path)


def one_hot(cls: int) -> np.ndarray:
    x = np.zeros((1, 4), np.float32)
    x[0, cls] = 5.0
    return x


def infer(site: SiteProcess, model: str, token: str, rid: str, x: np.ndarray) -> Any:
    response = httpx.post(
        f"{site.url}/v2/models/{model}/infer",
        json={**infer_body(x), "id": rid},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == rid
    return response.json()


def post_labels(site: SiteProcess, model: str, token: str | None, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{site.url}/v2/models/{model}/feedback", json=body, headers=headers, timeout=30
    )


def figures(fleet: Fleet, model: str) -> dict[tuple[str, int], tuple[str, float | None, int]]:
    doc = fleet.admin.request("GET", "/api/v1/accuracy", params={"model": model}).json()
    return {
        (f["site"], f["version"]): (f["metric"], f["value"], f["count"]) for f in doc["figures"]
    }


@pytest.fixture
def fleet(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fleet]:
    """A hub whose rollout controller ticks every 0.3 s (plain HTTP when marked so)."""
    monkeypatch.setenv("MODELFLEET_HUB_ROLLOUT_INTERVAL_S", "0.3")
    init = init_hub(tmp_path / "hub")
    plain = request.node.get_closest_marker("plain_http") is not None
    hub = HubProcess(tmp_path / "hub", tls=not plain).start()
    if not plain:
        trust_fleet_ca(monkeypatch, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    made = Fleet(tmp_path, hub, admin, admin.create_token("labels", "infer").token)
    try:
        yield made
    finally:
        for site in made.sites:
            site.stop()
        for proxy in made.proxies:
            proxy.close()
        admin.close()
        hub.stop()


def test_accuracy_per_site_and_version_and_the_gate(fleet: Fleet, tmp_path: Path) -> None:
    token = fleet.infer
    fleet.admin.push(classifier(tmp_path / "good.onnx", [0, 0, 0, 0]), "clf")
    site_a, site_b = fleet.add_site("site-a"), fleet.add_site("site-b")
    first = fleet.admin.deploy({"ref": "clf:1", "selector": "", "strategy": {"bake_s": 0}})
    wait_for(
        lambda: fleet.admin.get_rollout(first["rollout"]["id"])["state"] == "succeeded",
        "clf:1 deployed",
    )
    for name, site in (("site-a", site_a), ("site-b", site_b)):
        wait_for(lambda s=site: serving(s, "clf", token), what=f"clf:1 at {name}")

    # site-a: 10 predictions, 8 labels right and 2 wrong; site-b: 4 predictions, all right.
    for i in range(10):
        assert infer(site_a, "clf", token, f"a-{i}", one_hot(i % 4))["outputs"][0]["data"] == [
            i % 4
        ]
    for i in range(4):
        infer(site_b, "clf", token, f"b-{i}", one_hot(i))
    labels = [{"id": f"a-{i}", "label": i % 4 if i < 8 else (i + 1) % 4} for i in range(10)]
    answer = post_labels(site_a, "clf", token, {"labels": [*labels, {"id": "nope", "label": 1}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 10
    assert answer.json()["dropped"] == {
        "unknown_id": 1, "expired": 0, "duplicate": 0, "bad_label": 0
    }  # fmt: skip
    again = post_labels(site_a, "clf", token, {"labels": labels[:1]}).json()
    assert (again["accepted"], again["dropped"]["duplicate"]) == (0, 1)

    # The batch upload: a CSV through the CLI, to the site's endpoint.
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("id,label\n" + "".join(f"b-{i},{i}\n" for i in range(4)))
    result = CliRunner().invoke(
        app,
        ["site", "feedback", str(csv_file), "--model", "clf", "--site", site_b.url,
         "--token", token],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 label(s) accepted for clf; dropped: none" in result.output

    expected = {("site-a", 1): ("accuracy", 0.8, 10), ("site-b", 1): ("accuracy", 1.0, 4)}
    wait_for(lambda: figures(fleet, "clf") == expected, "accuracy at the hub", timeout=60)
    doc = fleet.admin.request("GET", "/api/v1/accuracy", params={"model": "clf"}).json()
    dropped = {f["site"]: f["dropped"] for f in doc["figures"]}
    assert dropped["site-a"] == {"unknown_id": 1, "expired": 0, "duplicate": 1, "bad_label": 0}

    status = CliRunner().invoke(
        app, ["status", "--hub", fleet.hub.url, "--token", fleet.admin.token]
    )
    assert status.exit_code == 0, status.output
    assert "site-a: clf accuracy 0.80 (10 labels, v1)" in status.output
    assert "site-b: clf accuracy 1.00 (4 labels, v1)" in status.output
    metrics = fleet.admin.request("GET", "/metrics").text
    assert (
        'modelfleet_accuracy{metric="accuracy",model="clf",site="site-a",version="1"} 0.8'
        in metrics
    )

    # Bad input: the reason, a 4xx, never a 500.
    too_many = {"labels": [{"id": str(i), "label": 1} for i in range(10_001)]}
    for body, status_code, says in (
        (too_many, 413, "at most 10000"),
        ({"labels": [{"id": "a-1"}]}, 400, "label"),
        ({"rows": []}, 400, "labels"),
    ):
        refused = post_labels(site_a, "clf", token, body)
        assert refused.status_code == status_code, refused.text
        assert says in refused.json()["error"]
    assert post_labels(site_a, "nope", token, {"labels": labels}).status_code == 404
    assert post_labels(site_a, "clf", None, {"labels": labels}).status_code == 401
    assert httpx.get(f"{site_a.url}/v2/models/clf/feedback", headers={
        "Authorization": f"Bearer {token}"}).status_code == 405  # fmt: skip

    # A new version that always answers class 0: its labels fail the canary wave.
    fleet.admin.push(classifier(tmp_path / "bad.onnx", [100, 0, 0, 0]), "clf")
    rollout = fleet.admin.deploy(
        {
            "ref": "clf:2",
            "selector": "",
            "strategy": {"kind": "canary", "canary": "site-a", "then": [100], "bake_s": 600},
            "gates": {"min_accuracy": 0.9, "min_labels": 6},
        }
    )["rollout"]["id"]
    wait_for(lambda: serving(site_a, "clf", token, version=2), what="clf:2 at the canary")
    for i in range(6):
        infer(site_a, "clf", token, f"v2-{i}", one_hot(1 + i % 3))
    posted = post_labels(
        site_a, "clf", token, {"labels": [{"id": f"v2-{i}", "label": 1 + i % 3} for i in range(6)]}
    )
    assert posted.json()["accepted"] == 6
    wait_for(
        lambda: fleet.admin.get_rollout(rollout)["state"] in ("failed", "rolled_back"),
        "the rollout failed by the accuracy gate",
        timeout=60,
    )
    done = fleet.admin.get_rollout(rollout)
    last = done["history"][-1]
    assert last["gate"] == "min_accuracy", last
    assert "accuracy 0.00% < 90.00% (6 labels)" in last["message"]
    wait_for(lambda: serving(site_a, "clf", token, version=1), what="site-a back on clf:1")
    assert figures(fleet, "clf")[("site-a", 2)] == ("accuracy", 0.0, 6)


def _forms() -> list[bytes]:
    value = float(SENTINEL_INPUT)
    out = [SENTINEL_ID.encode(), b"2718.28", b"31415.92", repr(SENTINEL_LABEL).encode()]
    for number in (value, SENTINEL_LABEL):
        for fmt in ("<d", "<f", ">d", ">f"):
            out.append(struct.pack(fmt, number))
    return out


def _decoded_base64(data: bytes) -> list[bytes]:
    out = []
    for token in re.findall(rb"[A-Za-z0-9+/]{16,}={0,2}", data):
        try:
            out.append(base64.b64decode(token + b"=" * (-len(token) % 4)))
        except ValueError:
            continue
    return out


# Plain HTTP: the proxy reads every byte the site sends to the hub; over TLS it would see
# only ciphertext and the check would prove nothing.
@pytest.mark.plain_http
def test_no_request_id_input_or_label_leaves_the_site(fleet: Fleet, tmp_path: Path) -> None:
    """A regressor's MAE reaches the hub exactly, from predictions remembered across a
    restart of the site, while no byte the site sent to the hub holds a request id, the
    sentinel input value or the sentinel label value."""
    fleet.admin.push(regressor(tmp_path / "reg.onnx"), "meter")
    proxy = fleet.proxy()
    site = fleet.add_site("plant-1", via=proxy)
    fleet.admin.assign("plant-1", "meter:1")
    wait_for(lambda: serving(site, "meter", fleet.infer), what="meter served")
    x = np.array([[1.0, 2.0, 3.0, SENTINEL_INPUT]], np.float32)
    predicted = float(np.float32(x.sum()))
    for i in range(3):
        infer(site, "meter", fleet.infer, f"{SENTINEL_ID}-{i}", x)
    site.stop()  # the predictions awaiting labels survive a restart of the site
    site.start()
    wait_for(lambda: serving(site, "meter", fleet.infer), what="meter served again")
    body = {"labels": [{"id": f"{SENTINEL_ID}-{i}", "label": SENTINEL_LABEL} for i in range(3)]}
    assert post_labels(site, "meter", fleet.infer, body).json()["accepted"] == 3
    mae = abs(SENTINEL_LABEL - predicted)
    wait_for(lambda: ("plant-1", 1) in figures(fleet, "meter"), "MAE at the hub", timeout=60)
    metric, value, count = figures(fleet, "meter")[("plant-1", 1)]
    assert (metric, count) == ("mae", 3)
    assert value == pytest.approx(mae, rel=1e-6)

    captured = bytes(proxy.sent)
    assert b'"feedback"' in captured  # the counts did cross this link
    decoded = _decoded_base64(captured)
    for form in _forms():
        assert form not in captured, form
        assert not any(form in blob for blob in decoded), form
