"""A site's desired state under the deployments that select it, computed from the rows.

Kept apart from :mod:`modelfleet.hub.deployments` (which writes the result through
``store.assignments``) because it is a pure function of the records: the deployments, the
rollout moving each, and per-site overrides (which win).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.store.records import (
    ACTIVE_STATES,
    DeploymentRecord,
    OverrideRecord,
    RolloutRecord,
    SiteRecord,
)


@dataclass(frozen=True)
class Desired:
    """One model's version at a site, and what decided it (a deployment, or a pin)."""

    version: int
    ref: str
    params: dict[str, Any]
    source: str  # deployment name, or "override"


def desired_for_site(
    site: SiteRecord,
    deployments: Iterable[DeploymentRecord],
    active: dict[str, RolloutRecord],
    overrides: Iterable[OverrideRecord],
) -> tuple[dict[str, Desired], list[str]]:
    """The site's managed models -> version, and conflicts found on the way."""
    result: dict[str, Desired] = {}
    conflicts: list[str] = []
    for d in deployments:
        if not parse_selector(d.selector).matches(site.labels):
            continue
        version = _deployment_version(d, site.name, active.get(d.name))
        if d.model in result and result[d.model].source != d.name:
            conflicts.append(
                f"site {site.name}: model {d.model} selected by {result[d.model].source} "
                f"and {d.name}; keeping {result[d.model].source}"
            )
            continue
        if version is not None:
            result[d.model] = Desired(version, f"{d.model}:{version}", d.params, d.name)
    for o in overrides:
        if o.site == site.name:
            result[o.model] = Desired(o.version, f"{o.model}:{o.version}", {}, "override")
    return result, conflicts


def _deployment_version(
    d: DeploymentRecord, site: str, rollout: RolloutRecord | None
) -> int | None:
    if rollout is not None and site in rollout.moved_sites():
        return rollout.to_version
    if d.stable_version is not None:
        return d.stable_version
    if rollout is not None and rollout.state in ACTIVE_STATES:
        previous = rollout.plan.get("previous", {}).get(site)
        return int(previous) if previous is not None else None
    return None
