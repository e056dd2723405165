"""Shared pieces of the federation tests: site data files and site configs on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml

from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    rows = np.column_stack([x, y.astype(np.float64)])
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def write_site_config(
    root: Path,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    participate: bool = True,
    reason: str = "",
    trainers: dict[str, str] | None = None,
    **federation: object,
) -> Path:
    data = write_csv(root / f"{name}.csv", x, y)
    config: dict[str, object] = {
        "datasets": {"digits": {"path": str(data), "label": "label", "eval_fraction": 0.2}},
        "federation": {"participate": participate, "reason": reason, **federation},
    }
    if trainers:
        config["trainers"] = trainers
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fl_hub(hub_factory, tmp_path, consents: dict[str, dict], **settings):
    """An in-process hub (``settings`` passed on) with model ``iris`` (softmax, 4 features,
    3 classes) and one enrolled, reporting site per entry of ``consents``, each having sent
    that federation consent. Returns ``(hub, site tokens by name, spec)``."""
    hub = hub_factory(**settings)
    spec = ModelSpec(family="softmax", features=4, classes=3)
    path = tmp_path / "m.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(path))
    hub.client.post(
        "/api/v1/models/iris/versions", content=path.read_bytes(), headers=hub.headers()
    ).raise_for_status()
    tokens = {}
    for name, consent in consents.items():
        _, secret = hub.ctx.sites.add(name, {"tier": "edge"})
        tokens[name] = hub.ctx.sites.enroll(secret).token
        h = hub.headers(tokens[name])
        hub.client.post(f"/api/v1/sites/{name}/report", json={}, headers=h).raise_for_status()
        hub.client.put(
            f"/api/v1/federation/sites/{name}/consent", json=consent, headers=h
        ).raise_for_status()
    return hub, tokens, spec


def fl_fleet(hub_factory, tmp_path, sites: int = 10, attacker_consent: dict | None = None):
    """:func:`fl_hub` with ``sites`` sites s0.. that consented to dataset ``iris``; s0 may
    declare more."""
    consents = {f"s{i}": {"participate": True, "datasets": ["iris"]} for i in range(sites)}
    if attacker_consent and sites:
        consents["s0"] |= attacker_consent
    return fl_hub(hub_factory, tmp_path, consents)
