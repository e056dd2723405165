"""What a round's aggregation reads: the stored updates, each weighted by at most what its
site may count for.

A site's example count is its weight in the mean and is self-reported; left unbounded, one
site claiming 2^40 examples would set the global model by itself. Each update counts for at
most the job's ``max_examples_per_site``, lowered by what the site's own config declared
(``federation.max_examples``, sent with its consent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from modelfleet.federation import wire
from modelfleet.federation.jobs import Consent, JobConfig
from modelfleet.federation.strategies import Update
from modelfleet.hub.store import FederationRepo

__all__ = ["example_caps", "stored_updates"]


def example_caps(
    consents: Mapping[str, Mapping[str, Any]], config: JobConfig
) -> Callable[[str], int]:
    """Per site, the most examples one of its updates counts for in ``config``'s job."""
    parsed = {site: Consent.model_validate(doc) for site, doc in consents.items()}

    def cap(site: str) -> int:
        consent = parsed.get(site)
        return config.max_examples_per_site if consent is None else consent.example_cap(config)

    return cap


def stored_updates(
    repo: FederationRepo, job_id: str, number: int, caps: Callable[[str], int]
) -> Iterator[Update]:
    """The round's stored updates, one model in memory at a time, example counts capped."""
    for row, payload in repo.iter_payloads(job_id, number):
        _, arrays = wire.unpack(payload)
        yield Update(
            row.site,
            np.asarray(arrays["delta"], np.float32),
            min(row.num_examples, caps(row.site)),
            {k: float(v) for k, v in row.metrics.items()},
        )
