"""The site's own governance check: defense in depth behind the hub's residency rules.

The hub refuses placements that break a residency rule, but a site should not have to
trust that: a misconfigured or compromised hub could still send it a model trained on data
it must not serve. The agent therefore checks every manifest's ``training_regions`` against
its local policy file before activating, and refuses with reason code
``policy_violation`` (the previous version keeps serving)::

    # /etc/modelfleet/site-policy.yaml
    jurisdiction: EU
    accepted_training_regions: [EU, UK]

Regions are the data-region words of the fleet's residency policies (docs/residency.md),
compared case-insensitively. A manifest without training regions passes only when
``allow_unknown_regions`` is true (default false: unknown provenance is not accepted where
a policy is declared). The file is re-read before every activation so an operator's edit
applies without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.errors import InvalidInput, PolicyViolation
from modelfleet.yamlfile import load_yaml


@dataclass(frozen=True)
class SitePolicy:
    jurisdiction: str | None
    accepted_training_regions: frozenset[str]
    allow_unknown_regions: bool = False
    source: str = "site policy"

    def check(self, manifest: Mapping[str, Any]) -> None:
        """Raise ``PolicyViolation`` if this site must not run the manifest's model."""
        what = f"{manifest.get('name')}:{manifest.get('version')}"
        regions = [str(r) for r in manifest.get("training_regions") or []]
        if not regions:
            if self.allow_unknown_regions:
                return
            raise PolicyViolation(
                f"{what} declares no training regions; {self.source} accepts only "
                f"{', '.join(sorted(self.accepted_training_regions))}"
            )
        # Case-insensitive, as the hub's residency rules and routing compare regions.
        accepted = {r.upper() for r in self.accepted_training_regions}
        refused = sorted({r for r in regions if r.upper() not in accepted})
        if refused:
            where = f" (jurisdiction {self.jurisdiction})" if self.jurisdiction else ""
            raise PolicyViolation(
                f"{what} was trained on data from {', '.join(refused)}, which {self.source}"
                f"{where} does not accept (accepted: "
                f"{', '.join(sorted(self.accepted_training_regions)) or 'none'})"
            )


def load_site_policy(path: Path) -> SitePolicy:
    """Read and validate the policy file; a broken file refuses everything (fail closed)."""
    try:
        raw = load_yaml(path, "site policy")
    except InvalidInput as exc:
        raise PolicyViolation(
            f"site policy {path} cannot be read, refusing: {exc.message}"
        ) from exc
    if not isinstance(raw, dict):
        raise PolicyViolation(f"site policy {path} must be a mapping, refusing")
    unknown = set(raw) - {"jurisdiction", "accepted_training_regions", "allow_unknown_regions"}
    if unknown:
        raise PolicyViolation(f"site policy {path}: unknown keys {sorted(unknown)}, refusing")
    regions = raw.get("accepted_training_regions", [])
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise PolicyViolation(
            f"site policy {path}: accepted_training_regions must be a list of names, refusing"
        )
    jurisdiction = raw.get("jurisdiction")
    if jurisdiction is not None and not isinstance(jurisdiction, str):
        raise PolicyViolation(f"site policy {path}: jurisdiction must be a string, refusing")
    return SitePolicy(
        jurisdiction=jurisdiction,
        accepted_training_regions=frozenset(regions),
        allow_unknown_regions=bool(raw.get("allow_unknown_regions", False)),
        source=f"site policy {path.name}",
    )


def enforce_site_policy(path: Path | None, manifest: Mapping[str, Any]) -> None:
    """The reconciler's hook: no file, no local policy; otherwise check the manifest."""
    if path is not None:
        load_site_policy(path).check(manifest)
