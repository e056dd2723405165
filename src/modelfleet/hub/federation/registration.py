"""A federated job's result becomes a normal, signed, deployable model version."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from modelfleet.federation.jobs import JobConfig
from modelfleet.federation.specs import ModelSpec, build_onnx, unflatten
from modelfleet.federation.strategies import make_strategy
from modelfleet.federation.wire import unpack_vector
from modelfleet.hub.registry import PushRequest, Registry, Upload
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import FederationRepo
from modelfleet.hub.store.records import JobRow


def registered_version(registry: Registry, name: str, job_id: str) -> int | None:
    """The global version a job already registered (found by its ``fl.job`` tag), if
    any: a hub killed while registering must not register a second one."""
    for version in registry.versions(name):
        if version.tags.get("fl.job") == job_id and "fl.site" not in version.tags:
            return version.version
    return None


def push_weights(
    registry: Registry,
    tmp_dir: Path,
    spec: ModelSpec,
    vector: np.ndarray,
    request: PushRequest,
    actor: str,
) -> int:
    """Build the ONNX graph of ``spec`` with these weights and push it as a signed
    version; returns its number."""
    model = build_onnx(spec, unflatten(spec, vector))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        path = Path(tmp) / "model.onnx"
        data = model.SerializeToString()
        path.write_bytes(data)
        upload = Upload(path=path, digest=hashlib.sha256(data).hexdigest(), size=len(data))
        return registry.push(request, upload, actor=actor).version


def register_result(
    repo: FederationRepo,
    registry: Registry,
    sites: Sites,
    tmp_dir: Path,
    job: JobRow,
    config: JobConfig,
    name: str,
) -> int:
    """Build the ONNX graph from the spec and the final (or best) weights and push it as a
    signed version with the job's lineage; returns the version number."""
    spec = ModelSpec.parse(job.spec)
    rounds = [
        r
        for r in repo.list_rounds(job.id)
        if r.state == "closed" and not config.personalizes(r.number)
    ]
    chosen_round = config.rounds
    weights_blob, _ = repo.job_weights(job.id)
    if config.result == "best":
        scored = [r for r in rounds if config.best_metric in r.metrics]
        if scored:
            best = max(scored, key=lambda r: float(r.metrics[config.best_metric]))
            # Sites evaluate a round's published weights before training on them.
            chosen_round = best.number - 1
            weights_blob = repo.round_weights(job.id, best.number)
    vector = unpack_vector(weights_blob)
    examples: dict[str, int] = {}
    for u in repo.list_updates(job.id):
        if u.kind == "update" and not config.personalizes(u.round):
            examples[u.site] = max(examples.get(u.site, 0), u.num_examples)
    last = rounds[-1].metrics if rounds else {}
    metrics = {
        f"fl_{k}": float(v)
        for k, v in last.items()
        if isinstance(v, int | float) and np.isfinite(v)
    }
    site_labels = {s.name: s.labels for s in sites.list()}
    regions = sorted({site_labels.get(s, {}).get("region", "") for s in examples} - {""})
    lineage = {
        "federated_job": job.id,
        "base": f"{job.model}:{job.base_version}",
        "strategy": config.strategy,
        "strategy_params": make_strategy(config.strategy, config.strategy_params).params(),
        "rounds": config.rounds,
        "registered_round": chosen_round,
        "sites": examples,
        "data": config.data,
        "train": config.train_config().model_dump(mode="json"),
        "final_metrics": last,
    }
    return push_weights(
        registry,
        tmp_dir,
        spec,
        vector,
        PushRequest(
            name=name,
            training_regions=tuple(regions),
            alias=config.alias,
            description="federated: " + json.dumps(lineage, sort_keys=True, default=str),
            framework="modelfleet-fl",
            parent_version=job.base_version if name == job.model else None,
            tags={
                "fl.job": job.id,
                "fl.strategy": config.strategy,
                "fl.rounds": str(config.rounds),
                "fl.sites": ",".join(sorted(examples)),
                "fl.examples": str(sum(examples.values())),
            },
            metrics=metrics,
        ),
        actor=f"federation:{job.id}",
    )
