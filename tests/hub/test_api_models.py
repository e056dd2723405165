"""The registry through the hub's HTTP API (in-process app, real SQLite and directory)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from modelfleet.errors import DigestMismatch
from modelfleet.registry.manifest import verify_manifest
from tests.conftest import InProcessHub


def push(hub: InProcessHub, name: str, path: Path, token: str | None = None, **params: object):
    return hub.client.post(
        f"/api/v1/models/{name}/versions",
        content=path.read_bytes(),
        params=params,
        headers={**hub.headers(token), "Content-Type": "application/octet-stream"},
    )


def state(hub: InProcessHub) -> tuple[int, list[str], list[Path]]:
    """Rows, blobs and spooled temporaries: a refused push must change none of them."""
    versions = sum(m.version_count for m in hub.ctx.store.models.list_models())
    models = len(hub.ctx.store.models.list_models())
    tmp = sorted(hub.ctx.data_dir.tmp_dir.glob("*")) if hub.ctx.data_dir.tmp_dir.exists() else []
    return versions + 1000 * models, sorted(hub.ctx.artifacts.list_digests()), tmp


def test_push_then_show_resolve_alias_download(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    path = tiny_onnx()
    response = push(
        hub,
        "pump",
        path,
        training_region=["eu-west", "us-east"],
        alias="production",
        description="first",
        tag=["team=plant"],
        metrics='{"accuracy": 0.9}',
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["aliases"] == ["production"]
    assert body["training_regions"] == ["eu-west", "us-east"]
    assert body["io"]["inputs"][0] == {"name": "X", "datatype": "FP32", "shape": [-1, 4]}
    assert body["opset"] == 17
    assert body["tags"] == {"team": "plant"}
    assert body["metrics"] == {"accuracy": 0.9}
    assert body["pushed_by"] == "admin:admin"

    key = hub.client.get("/api/v1/keys/signing").json()["public_key"]
    manifest = verify_manifest(body["manifest"], body["signature"], key, blob=path)
    assert manifest["training_regions"] == ["eu-west", "us-east"]

    second = push(hub, "pump", tiny_onnx(), parent=1)
    assert second.json()["version"] == 2
    assert second.json()["parent_version"] == 1

    by_alias = hub.client.get("/api/v1/resolve/pump@production", headers=hub.headers())
    assert by_alias.json()["version"] == 1
    latest = hub.client.get("/api/v1/resolve/pump", headers=hub.headers())
    assert latest.json()["version"] == 2
    moved = hub.client.put(
        "/api/v1/models/pump/aliases/production", json={"version": 2}, headers=hub.headers()
    )
    assert moved.status_code == 200
    assert moved.json()["aliases"] == {"production": 2}
    assert (
        hub.client.get("/api/v1/resolve/pump@production", headers=hub.headers()).json()["version"]
        == 2
    )

    listing = hub.client.get("/api/v1/models", headers=hub.headers()).json()
    assert [(m["name"], m["latest_version"], m["version_count"]) for m in listing] == [
        ("pump", 2, 2)
    ]
    detail = hub.client.get("/api/v1/models/pump", headers=hub.headers()).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]

    blob = hub.client.get("/api/v1/models/pump/versions/1/artifact", headers=hub.headers())
    assert blob.status_code == 200
    assert blob.content == path.read_bytes()
    assert blob.headers["accept-ranges"] == "bytes"

    deleted = hub.client.delete("/api/v1/models/pump/aliases/production", headers=hub.headers())
    assert deleted.status_code == 204
    gone = hub.client.get("/api/v1/resolve/pump@production", headers=hub.headers())
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"


def test_range_download_resumes(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    path = tiny_onnx()
    data = path.read_bytes()
    push(hub, "pump", path)
    url = "/api/v1/models/pump/versions/1/artifact"
    part = hub.client.get(url, headers={**hub.headers(), "Range": "bytes=10-"})
    assert part.status_code == 206
    assert part.content == data[10:]
    assert part.headers["content-range"] == f"bytes 10-{len(data) - 1}/{len(data)}"
    middle = hub.client.get(url, headers={**hub.headers(), "Range": "bytes=5-9"})
    assert middle.content == data[5:10]
    suffix = hub.client.get(url, headers={**hub.headers(), "Range": "bytes=-7"})
    assert suffix.content == data[-7:]
    beyond = hub.client.get(url, headers={**hub.headers(), "Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"


def test_blob_by_digest(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    digest = push(hub, "pump", tiny_onnx()).json()["digest"]
    assert hub.client.get(f"/api/v1/blobs/{digest}", headers=hub.headers()).status_code == 200
    missing = hub.client.get("/api/v1/blobs/" + "0" * 64, headers=hub.headers())
    assert missing.status_code == 404
    bad = hub.client.get("/api/v1/blobs/xyz", headers=hub.headers())
    assert bad.status_code == 400


BAD_UPLOADS: dict[str, Callable[[Path], bytes]] = {
    "pickle": lambda p: pickle.dumps({"weights": [1, 2, 3]}),
    "text": lambda p: b"this is not a model\n" * 10,
    "truncated": lambda p: p.read_bytes()[: len(p.read_bytes()) // 2],
    "empty": lambda p: b"",
}


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_bad_uploads_refused_without_leftovers(hub_factory, tiny_onnx, tmp_path, kind) -> None:
    hub = hub_factory()
    push(hub, "pump", tiny_onnx())
    before = state(hub)
    bad = tmp_path / f"bad-{kind}.bin"
    bad.write_bytes(BAD_UPLOADS[kind](tiny_onnx()))
    response = push(hub, "pump", bad)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"invalid_artifact", "invalid_input"}
    assert response.json()["error"]["message"]
    if kind == "pickle":
        assert "pickle" in response.json()["error"]["message"]
    assert state(hub) == before


def test_oversized_upload_refused(hub_factory, tiny_onnx) -> None:
    hub = hub_factory(max_artifact_bytes=64)
    before = state(hub)
    response = push(hub, "pump", tiny_onnx())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "artifact_too_large"
    assert state(hub) == before


def test_chunked_oversized_upload_refused_while_streaming(hub_factory, tiny_onnx) -> None:
    hub = hub_factory(max_artifact_bytes=64)
    data = tiny_onnx().read_bytes()
    before = state(hub)

    def chunks():
        for i in range(0, len(data), 16):
            yield data[i : i + 16]

    response = hub.client.post(
        "/api/v1/models/pump/versions",
        content=chunks(),
        headers={**hub.headers(), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 413
    assert state(hub) == before


@pytest.mark.parametrize(
    ("name", "params", "status", "code"),
    [
        ("bad name!", {}, 400, "invalid_name"),
        ("-leading", {}, 400, "invalid_name"),
        ("pump", {"alias": "3"}, 400, "invalid_name"),
        ("pump", {"training_region": ["eu west"]}, 400, "invalid_name"),
        ("pump", {"metrics": "{not json"}, 400, "invalid_input"),
        ("pump", {"metrics": '{"acc": "high"}'}, 400, "invalid_input"),
        ("pump", {"tag": ["novalue"]}, 400, "invalid_input"),
        ("pump", {"parent": 7}, 404, "not_found"),
        ("pump", {"parent": 0}, 400, "invalid_input"),
    ],
)
def test_bad_metadata_refused_without_leftovers(
    hub_factory, tiny_onnx, name, params, status, code
) -> None:
    hub = hub_factory()
    before = state(hub)
    response = push(hub, name, tiny_onnx(), **params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert state(hub) == before


def test_auth_no_token_wrong_role(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    before = state(hub)
    anonymous = hub.client.post("/api/v1/models/pump/versions", content=tiny_onnx().read_bytes())
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = hub.client.get("/api/v1/models", headers={"Authorization": "Bearer mf_nope"})
    assert wrong.status_code == 401
    viewer = hub.token("viewer")
    denied = push(hub, "pump", tiny_onnx(), token=viewer)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    assert state(hub) == before
    assert hub.client.get("/api/v1/models", headers=hub.headers(viewer)).status_code == 200
    operator = hub.token("operator")
    assert push(hub, "pump", tiny_onnx(), token=operator).status_code == 201
    assert hub.client.get("/api/v1/tokens", headers=hub.headers(operator)).status_code == 403
    audit = hub.client.get("/api/v1/audit", headers=hub.headers()).json()
    outcomes = [(a["actor"], a["action"], a["outcome"]) for a in audit]
    assert ("viewer:t-viewer", "model.push", "forbidden") in outcomes
    assert ("operator:t-operator", "model.push", "ok") in outcomes


def test_unknown_alias_version_model(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    push(hub, "pump", tiny_onnx(), alias="production")
    for path, code in [
        ("/api/v1/resolve/pump@canary", "not_found"),
        ("/api/v1/resolve/pump:9", "not_found"),
        ("/api/v1/resolve/nope", "not_found"),
        ("/api/v1/models/nope", "not_found"),
        ("/api/v1/resolve/pump:x", "invalid_name"),
    ]:
        response = hub.client.get(path, headers=hub.headers())
        assert response.json()["error"]["code"] == code, path
    canary = hub.client.get("/api/v1/resolve/pump@canary", headers=hub.headers())
    assert "production" in canary.json()["error"]["message"]
    bad_alias = hub.client.put(
        "/api/v1/models/pump/aliases/canary", json={"version": 5}, headers=hub.headers()
    )
    assert bad_alias.status_code == 404
    bad_body = hub.client.put(
        "/api/v1/models/pump/aliases/canary", json={"version": "x"}, headers=hub.headers()
    )
    assert bad_body.status_code == 400
    assert bad_body.json()["error"]["code"] == "invalid_input"


def test_tokens_lifecycle_and_revocation(hub_factory) -> None:
    hub = hub_factory()
    created = hub.client.post(
        "/api/v1/tokens", json={"name": "ci", "role": "operator"}, headers=hub.headers()
    ).json()
    assert created["token"].startswith("mf_")
    listing = hub.client.get("/api/v1/tokens", headers=hub.headers()).json()
    assert {t["name"] for t in listing} == {"admin", "ci"}
    assert all("token" not in t for t in listing)
    assert (
        hub.client.get("/api/v1/models", headers=hub.headers(created["token"])).status_code == 200
    )
    revoked = hub.client.delete(f"/api/v1/tokens/{created['id']}", headers=hub.headers())
    assert revoked.status_code == 204
    assert (
        hub.client.get("/api/v1/models", headers=hub.headers(created["token"])).status_code == 401
    )
    again = hub.client.delete(f"/api/v1/tokens/{created['id']}", headers=hub.headers())
    assert again.status_code == 400
    unknown = hub.client.delete("/api/v1/tokens/nope", headers=hub.headers())
    assert unknown.status_code == 404
    site = hub.client.post(
        "/api/v1/tokens", json={"name": "s", "role": "site"}, headers=hub.headers()
    )
    assert site.status_code == 400
    assert "enrollment" in site.json()["error"]["message"]


def test_errors_are_json_never_500(hub_factory) -> None:
    hub = hub_factory()
    assert hub.client.get("/nope").json()["error"]["code"] == "not_found"
    assert hub.client.delete("/healthz").status_code == 405
    bad_json = hub.client.post(
        "/api/v1/tokens",
        content=b"{",
        headers={**hub.headers(), "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert hub.client.get("/healthz").json()["status"] == "ok"
    assert hub.client.get("/metrics").status_code == 401  # per-site figures: sites:read
    metrics = hub.client.get("/metrics", headers=hub.headers(hub.token("viewer"))).text
    assert "modelfleet_hub_requests_total" in metrics
    assert hub.client.get("/docs").status_code == 200
    assert "/api/v1/models/{name}/versions" in hub.client.get("/openapi.json").json()["paths"]


def test_tampered_blob_fails_verification(hub_factory, tiny_onnx) -> None:
    hub = hub_factory()
    path = tiny_onnx()
    body = push(hub, "pump", path).json()
    key = hub.client.get("/api/v1/keys/signing").json()["public_key"]
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(DigestMismatch):
        verify_manifest(body["manifest"], body["signature"], key, blob=bytes(flipped))


def test_oversized_json_bodies_get_413_but_uploads_have_their_own_limit(
    hub_factory, tiny_onnx
) -> None:
    hub = hub_factory(max_body_bytes=1024)
    big = {"name": "x" * 4000, "role": "viewer"}
    declared = hub.client.post("/api/v1/tokens", json=big, headers=hub.headers())
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "body_too_large"

    def chunks():
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'", "role": "viewer"}'

    streamed = hub.client.post(
        "/api/v1/tokens",
        content=chunks(),
        headers={**hub.headers(), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert [t["name"] for t in hub.client.get("/api/v1/tokens", headers=hub.headers()).json()] == [
        "admin"
    ]
    model = tiny_onnx()
    assert model.stat().st_size > 0
    assert push(hub, "pump", model).status_code == 201  # uploads stream under their own limit
