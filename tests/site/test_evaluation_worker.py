"""The site's evaluation worker on its own: what it checks before it runs a version, what
it computes, and what it refuses (with the reason the hub will show).

Versions come signed by a real hub's registry (an in-process hub); the worker's blob
download reads the hub's artifact store, or hands back tampered bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from modelfleet.api.evaluations import EvaluationTask, TaskVersion
from modelfleet.errors import DigestMismatch
from modelfleet.hub.evaluation_scores import Counts as HubCounts
from modelfleet.hub.evaluation_scores import score
from modelfleet.registry.keyset import KeySet
from modelfleet.registry.signing import load_public_key
from modelfleet.site.cache import BlobCache
from modelfleet.site.evaluation import EvaluationWorker, Refused
from modelfleet.site.federated import SiteConfig
from modelfleet.site.trainer import DatasetConfig
from modelfleet.transport.session import HubSession
from tests.hub.evaluation_support import (
    classifiers,
    failure_detectors,
    imbalanced,
    labelled,
    regressors,
    write_csv,
)


@pytest.fixture
def registry(hub_factory, tmp_path: Path):
    """A hub registry holding clf:1 (bad), clf:2 (good), reg:1 (good), reg:2 (bad),
    fail:1 (never predicts a failure), fail:2 (catches most, some false alarms)."""
    hub = hub_factory()
    good, bad = classifiers(tmp_path)
    good_r, bad_r = regressors(tmp_path)
    never, catches = failure_detectors(tmp_path)
    models = [("clf", bad), ("clf", good), ("reg", good_r), ("reg", bad_r)]
    for name, path in [*models, ("fail", never), ("fail", catches)]:
        hub.client.post(
            f"/api/v1/models/{name}/versions", content=path.read_bytes(), headers=hub.headers()
        ).raise_for_status()
    return hub.ctx.registry


def task(registry, model: str, versions: list[int], **fields) -> EvaluationTask:
    records = [registry.version(model, v) for v in versions]
    return EvaluationTask(
        evaluation="ev-0000abcd",
        model=model,
        metric=fields.pop("metric", "accuracy"),
        min_samples=fields.pop("min_samples", 20),
        data=fields.pop("data", None),
        rows=fields.pop("rows", "holdout"),
        deadline_at=datetime.now(UTC) + timedelta(minutes=5),
        versions=[
            TaskVersion(
                version=r.version,
                manifest=r.manifest,
                signature=r.signature,
                digest=r.digest,
                size=r.size,
            )
            for r in records
        ],
    )


def worker(tmp_path: Path, registry, *, labels="class", tamper=False, **options):
    """A worker over one data set ``plant`` (300 rows, a fifth held out; or ``data``)."""
    x, y = options.pop("data", None) or labelled(5, 300)
    if labels == "real":
        y = x[:, 0] + x[:, 1]
    data = write_csv(tmp_path / "plant.csv", x, y)
    config = SiteConfig(
        datasets={"plant": DatasetConfig(path=data, eval_fraction=0.2)},
        federation=options.pop("federation", {"participate": True}),
    )
    downloads: list[str] = []
    keys = options.pop("keys", None) or KeySet.of(load_public_key(registry.public_key))

    def download(url: str, partial: Path, size: int) -> None:
        downloads.append(url)
        digest = url.rsplit("/", 1)[1]
        blob = registry.read_artifact(digest)
        partial.write_bytes(blob[:-1] + b"\0" if tamper else blob)

    made = EvaluationWorker(
        config,
        site="s1",
        session=HubSession("http://127.0.0.1:9"),  # never dialled by evaluate()
        download=download,
        keys=lambda: keys,
        served=BlobCache(tmp_path / "served"),
        cache_dir=tmp_path / "eval-cache",
        policy_file=options.pop("policy_file", None),
        max_rows=options.pop("max_rows", 100_000),
    )
    made.downloads = downloads
    return made


def test_counts_of_a_classifier_on_the_hold_out(tmp_path: Path, registry) -> None:
    w = worker(tmp_path, registry)
    counts = w.evaluate(task(registry, "clf", [2, 1]))
    assert counts[2].count == counts[1].count == 60  # the hold-out: a fifth of 300
    assert counts[2].total / 60 > 0.9 > 0.1 > counts[1].total / 60
    assert counts[2].total == int(counts[2].total)
    assert len(w.downloads) == 2  # neither version is served here: both fetched
    every = w.evaluate(task(registry, "clf", [2, 1], rows="all"))
    assert every[2].count == 300


def test_a_regressor_gives_absolute_error_sums(tmp_path: Path, registry) -> None:
    w = worker(tmp_path, registry, labels="real")
    counts = w.evaluate(task(registry, "reg", [1, 2], metric="mae"))
    assert counts[1].count == 60
    assert counts[1].total / 60 < 0.01 < 1.0 < counts[2].total / 60


def test_rows_are_capped_by_the_site_setting(tmp_path: Path, registry) -> None:
    w = worker(tmp_path, registry, max_rows=25)
    assert w.evaluate(task(registry, "clf", [2, 1]))[2].count == 25
    with pytest.raises(Refused, match="needs at least 30"):
        w.evaluate(task(registry, "clf", [2, 1], min_samples=30))


def test_nothing_unverified_is_run(tmp_path: Path, registry) -> None:
    forged = task(registry, "clf", [2, 1])
    forged.versions[0].signature = forged.versions[1].signature
    w = worker(tmp_path, registry)
    with pytest.raises(Refused, match="signature"):
        w.evaluate(forged)
    assert w.downloads == []  # refused before a byte was fetched
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = worker(tmp_path, registry, keys=KeySet.of(Ed25519PrivateKey.generate()))
    with pytest.raises(Refused):
        stranger.evaluate(task(registry, "clf", [2, 1]))
    tampered = worker(tmp_path, registry, tamper=True)
    with pytest.raises(DigestMismatch):
        tampered.evaluate(task(registry, "clf", [2, 1]))
    assert not any((tmp_path / "eval-cache" / "blobs" / "sha256").iterdir())


def test_the_site_config_and_policy_decide(tmp_path: Path, registry) -> None:
    no = worker(tmp_path, registry, federation={"participate": False, "reason": "audit"})
    with pytest.raises(Refused, match="refuses fleet learning: audit"):
        no.evaluate(task(registry, "clf", [2, 1]))
    other = worker(tmp_path, registry, federation={"participate": True, "models": ["reg"]})
    with pytest.raises(Refused, match="does not allow model 'clf'"):
        other.evaluate(task(registry, "clf", [2, 1]))
    w = worker(tmp_path, registry)
    with pytest.raises(Refused, match="no data set 'hospital'"):
        w.evaluate(task(registry, "clf", [2, 1], data="hospital"))
    policy = tmp_path / "policy.yaml"
    policy.write_text("jurisdiction: EU\naccepted_training_regions: [EU]\n")
    strict = worker(tmp_path, registry, policy_file=policy)
    with pytest.raises(Refused, match=r"policy: .*declares no training regions"):
        strict.evaluate(task(registry, "clf", [2, 1]))
    assert strict.downloads == []


def test_labels_that_are_not_classes_are_refused_for_accuracy(tmp_path: Path, registry) -> None:
    w = worker(tmp_path, registry, labels="real")
    with pytest.raises(Refused, match="unusable"):
        w.evaluate(task(registry, "clf", [2, 1]))
    assert np.isfinite(w.evaluate(task(registry, "reg", [1, 2], metric="mae"))[1].total)


def test_balanced_accuracy_prefers_the_model_that_catches_failures(
    tmp_path: Path, registry
) -> None:
    x, y = imbalanced(11, 2000)
    w = worker(tmp_path, registry, data=(x, y))
    failures = int(y.sum())
    assert 60 < failures < 140  # about 5 %
    counts = w.evaluate(task(registry, "fail", [1, 2], metric="balanced_accuracy", rows="all"))
    never, catches = counts[1], counts[2]
    # Per true class, [right, rows]; the rows of each class are the data's, for both.
    assert never.classes == {"0": (2000 - failures, 2000 - failures), "1": (0, failures)}
    assert catches.classes is not None
    assert catches.classes["1"][1] == failures
    assert catches.classes["1"][0] > failures / 2  # catches most failures
    assert catches.classes["0"][0] < 2000 - failures  # with some false alarms
    for c in counts.values():
        assert c.count == 2000
        assert c.total == sum(right for right, _ in c.classes.values())
    # Plain accuracy prefers the model that never predicts a failure; balanced the other.
    assert never.total > catches.total
    a = score(1, "balanced_accuracy", [HubCounts(never.count, never.total, never.classes)])
    b = score(2, "balanced_accuracy", [HubCounts(catches.count, catches.total, catches.classes)])
    assert a.value == pytest.approx(0.5)
    assert b.value is not None
    assert b.value > 0.75
    # What leaves the site: the two numbers and the per-class pairs, nothing else.
    assert never.wire() == {
        "count": 2000,
        "total": float(2000 - failures),
        "classes": {"0": [2000 - failures, 2000 - failures], "1": [0, failures]},
    }
    plain = w.evaluate(task(registry, "fail", [1, 2], rows="all"))
    assert plain[1].classes is None
    assert plain[1].wire() == {"count": 2000, "total": float(2000 - failures)}


def test_balanced_accuracy_is_refused_for_too_many_classes_and_for_a_regressor(
    tmp_path: Path, registry
) -> None:
    x, _ = labelled(5, 700)
    many = worker(tmp_path, registry, data=(x, np.arange(700) % 70))
    with pytest.raises(Refused, match="70 classes; balanced accuracy is reported for at most 64"):
        many.evaluate(task(registry, "clf", [2, 1], metric="balanced_accuracy", rows="all"))
    assert many.downloads == []  # refused before any model was fetched
    w = worker(tmp_path, registry)
    # A regressor's single real-valued column is not class scores.
    with pytest.raises(Refused, match="no label output to compute balanced_accuracy"):
        w.evaluate(task(registry, "reg", [1, 2], metric="balanced_accuracy"))
