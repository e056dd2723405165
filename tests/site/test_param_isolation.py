"""One bad assignment parameter fails only its own model at the site (issue 16).

The hub refuses bad serving parameters where they are written, but a site treats its
desired state as hostile input and checks them again per model. Here the reconciler is fed
a document directly (as a hub that skipped its checks would send it): the good model
activates, the bad one fails with a clear error, keeps serving its previous version, and is
retried with back-off rather than on every pass.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelfleet.errors import NotFound
from modelfleet.hub.keys import HubKeys
from modelfleet.loops import Backoff
from modelfleet.registry.desired_state import DesiredModel, DesiredState, sign_desired_state
from modelfleet.registry.manifest import build_manifest, sha256_file, sign_manifest
from modelfleet.site.cache import BlobCache
from modelfleet.site.floors import DesiredStateFloor
from modelfleet.site.reconciler import Reconciler
from modelfleet.site.repository import ModelRepository
from modelfleet.site.state import SiteState


def desired_state(keys: HubKeys, revision: int, models: list[dict[str, Any]]) -> dict[str, Any]:
    """The desired-state document as the hub sends it (``hub/sites.py``): the whole state
    signed by the hub's key, as the site takes nothing else."""
    now = datetime.now(UTC)
    state = DesiredState(
        site="plant-a",
        revision=revision,
        issued_at=now,
        expires_at=now + timedelta(days=1),
        models=tuple(
            DesiredModel(
                m["name"], m["version"], m["ref"], m["manifest"], m["signature"], m["params"]
            )
            for m in models
        ),
    )
    text, signature = sign_desired_state(state, keys.current)
    return {
        "site": "plant-a",
        "revision": revision,
        "signed": {"text": text, "signature": signature},
    }


class Hub:
    """Signs versions of tiny models as the hub's registry would, and serves their blobs."""

    def __init__(self, root: Path, tiny_onnx: Callable[..., Path]) -> None:
        self.keys = HubKeys.create(root)
        self.tiny_onnx = tiny_onnx
        self.blobs: dict[str, Path] = {}
        self.downloads: list[str] = []

    def version(self, name: str, version: int, params: dict[str, Any]) -> dict[str, Any]:
        """An assignment of ``name:version`` (a fresh blob) with these params, unchecked."""
        blob = self.tiny_onnx(offset=float(version))
        digest, size = sha256_file(blob)
        self.blobs[digest] = blob
        manifest = build_manifest(
            name=name,
            version=version,
            digest=digest,
            size=size,
            io={"inputs": [], "outputs": []},
            opset=17,
            framework=None,
            training_regions=[],
            parent_version=None,
            created_at=datetime.now(UTC),
            key_id=self.keys.current_id,
        )
        text, signature = sign_manifest(manifest, self.keys.current)
        return {
            "name": name,
            "version": version,
            "ref": f"{name}:{version}",
            "digest": digest,
            "size": size,
            "manifest": text,
            "signature": signature,
            "artifact_url": f"/api/v1/blobs/{digest}",
            "params": params,
        }

    def download(self, path: str, partial: Path, _size: int) -> None:
        digest = path.rsplit("/", 1)[-1]
        self.downloads.append(digest)
        shutil.copyfile(self.blobs[digest], partial)


def serving(site: Reconciler, name: str) -> int | None:
    """The version of ``name`` that answers, checked by running it; None if none does."""
    try:
        model = site.repository.get(name)
    except NotFound:
        return None
    out = model.run({"X": np.zeros((1, 4), dtype=np.float32)})["Y"]
    assert float(out[0][0]) == float(model.version)  # Y = X + version: the model itself
    return model.version


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"intra_op_threads": "four"}, "intra_op_threads must be an integer in [1, 256]"),
        ({"intra_op_threads": 0}, "intra_op_threads must be an integer in [1, 256]"),
        ({"max_batch_size": True}, "max_batch_size must be an integer"),
        ({"threads": 4}, "unknown parameter 'threads'"),
        # (params that are not an object cannot be signed: the signed desired state's
        # schema refuses the whole document; tests/registry/test_desired_state.py)
    ],
)
def test_a_bad_param_fails_only_its_model_and_is_retried_with_back_off(
    tmp_path: Path, tiny_onnx: Callable[..., Path], params: Any, message: str
) -> None:
    hub = Hub(tmp_path / "hub", tiny_onnx)
    state = SiteState(tmp_path / "state.db")
    site = Reconciler(
        state=state,
        cache=BlobCache(tmp_path / "cache"),
        repository=ModelRepository(),
        public_key=hub.keys.trusted(),
        download=hub.download,
        floors=DesiredStateFloor.load(state, "plant-a"),
        # Deterministic jitter; after the n-th failure the wait is in [5, 10] * 2**(n-1).
        backoff=Backoff(first_s=10.0, max_s=1000.0, rng=random.Random(7)),
    )
    a1 = hub.version("a", 1, {})
    assert site.apply(desired_state(hub.keys, 1, [a1]), now=0.0)
    assert serving(site, "a") == 1

    # Revision 2: a new version of "a" with a bad parameter, listed before a good new model.
    a2_bad = hub.version("a", 2, params)
    b1 = hub.version("b", 1, {"max_batch_size": 8})
    c1_bad = hub.version("c", 1, params)  # a new model: nothing of it to keep serving
    doc = desired_state(hub.keys, 2, [a2_bad, c1_bad, b1])
    assert site.apply(doc, now=100.0)
    statuses = {s["name"]: s for s in site.report_models()}
    assert statuses["b"]["state"] == "ready"
    assert serving(site, "b") == 1
    for name, version, active in (("a", 2, 1), ("c", 1, None)):
        status = statuses[name]
        assert (status["state"], status["active_version"]) == ("failed", active)
        assert status["error"]["code"] == "invalid_input"
        assert status["error"]["message"].startswith(f"{name}:{version} params")
        assert message in status["error"]["message"]
    assert serving(site, "a") == 1  # the old version keeps answering
    assert serving(site, "c") is None
    assert site.applied_revision == 1  # not converged: revision 2 is not reported as applied

    # Passes before the back-off ends leave the failed models alone (nothing changes,
    # nothing is downloaded again); the first retry comes 5 to 10 s after the failure.
    downloads = len(hub.downloads)
    for now in (100.5, 102.0, 104.9):
        assert site.apply(doc, now=now) is False
    assert site.statuses["a"].attempts == site.statuses["c"].attempts == 1
    assert site.apply(doc, now=110.1)  # retried, and failed again
    assert site.statuses["a"].attempts == 2
    # The wait doubles: the third try is 10 to 20 s after the second.
    assert site.apply(doc, now=110.1 + 9.9) is False
    assert site.apply(doc, now=110.1 + 20.1)
    assert site.statuses["a"].attempts == 3
    assert len(hub.downloads) == downloads  # retries reuse the cached, verified blob
    assert serving(site, "a") == 1
    assert serving(site, "b") == 1

    # The corrected assignment (a new version, as the hub would send) activates at once.
    a3 = hub.version("a", 3, {"intra_op_threads": 2})
    site.apply(desired_state(hub.keys, 3, [a3, b1]), now=131.0)
    assert serving(site, "a") == 3
    assert {s["name"]: s["state"] for s in site.report_models()} == {"a": "ready", "b": "ready"}
    assert site.applied_revision == 3
    site.state.close()
