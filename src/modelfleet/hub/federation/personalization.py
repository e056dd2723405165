"""Per-site variants: after the last round, each site fine-tunes the final global model.

A job with ``personalize_epochs`` runs one more round in which sites train the final
global weights on their own data for that many epochs (plain fine-tuning) and post the
delta as usual; the round aggregates nothing. When the job finalizes, each delta on top
of the global weights becomes that site's variant: a normal signed version of the
result model, tagged ``fl.job`` and ``fl.site``, whose training region is the site's.
Operators deploy one to its site with a per-site override (``modelfleet pin``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelfleet.crashpoints import crash_point
from modelfleet.federation import wire
from modelfleet.federation.jobs import JobConfig
from modelfleet.federation.specs import ModelSpec
from modelfleet.federation.wire import unpack_vector
from modelfleet.hub.federation.registration import push_weights
from modelfleet.hub.registry import PushRequest, Registry
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import FederationRepo
from modelfleet.hub.store.records import JobRow


def registered_variants(registry: Registry, name: str, job_id: str) -> dict[str, int]:
    """The per-site variants a job registered so far: ``{site: version}``."""
    return {
        v.tags["fl.site"]: v.version
        for v in registry.versions(name)
        if v.tags.get("fl.job") == job_id and "fl.site" in v.tags
    }


def register_variants(
    repo: FederationRepo,
    registry: Registry,
    sites: Sites,
    tmp_dir: Path,
    job: JobRow,
    config: JobConfig,
    name: str,
    global_version: int,
) -> dict[str, int]:
    """Register every site's fine-tuned model not registered yet (safe to repeat after
    a crash); returns all of the job's variants."""
    number = config.total_rounds()
    done = registered_variants(registry, name, job.id)
    spec = ModelSpec.parse(job.spec)
    base = unpack_vector(repo.round_weights(job.id, number))
    labels = {s.name: s.labels for s in sites.list()}
    for row, payload in repo.iter_payloads(job.id, number):
        if row.site in done:
            continue
        _, arrays = wire.unpack(payload)
        weights = base + np.asarray(arrays["delta"], np.float32)
        region = labels.get(row.site, {}).get("region", "")
        lineage = {
            "federated_job": job.id,
            "personalized_for": row.site,
            "from": f"{name}:{global_version}",
            "epochs": config.personalize_epochs,
            "examples": row.num_examples,
            # Sites evaluate the weights they are sent before training on them.
            "global_model_at_site": {k: v for k, v in row.metrics.items() if k.startswith("eval")},
        }
        done[row.site] = push_weights(
            registry,
            tmp_dir,
            spec,
            weights,
            PushRequest(
                name=name,
                training_regions=(region,) if region else (),
                description="personalized: " + json.dumps(lineage, sort_keys=True),
                framework="modelfleet-fl",
                parent_version=global_version,
                tags={"fl.job": job.id, "fl.site": row.site, "fl.variant": "personalized"},
                metrics={
                    f"finetune_{k}": float(v)
                    for k, v in row.metrics.items()
                    if k.startswith("train") and np.isfinite(v)
                },
            ),
            actor=f"federation:{job.id}",
        )
        # Some variants registered, not all: a restart registers only the missing ones
        # (``done`` is read from the registry's fl.site tags, not from this process).
        crash_point("hub.fl.mid_variants")
    return done
