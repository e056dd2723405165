"""The fleet of real processes the rollout end-to-end tests share (one per test session
of this package: its hub and three sites start once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca
from tests.deploy.fleet import HUB_ENV, SITE_ENV, SITES, Fleet, env, wait_for


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    init = init_hub(root / "hub")
    with env(HUB_ENV):
        hub = HubProcess(root / "hub").start()
    trusted = pytest.MonkeyPatch()  # package scope: undone in the finally below
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    made = Fleet(root, hub, admin, init.admin_token)
    made.infer = admin.create_token("traffic", "infer").token
    policy = root / "site-a-policy.yaml"
    policy.write_text("jurisdiction: EU\naccepted_training_regions: [EU, global]\n")
    try:
        for name, labels in SITES.items():
            token = admin.add_site(name, labels)["enrollment_token"]
            extra = {**SITE_ENV}
            if name == "site-a":
                extra["MODELFLEET_SITE_POLICY_FILE"] = str(policy)
            made.sites[name] = SiteProcess(root / name, hub.url, token, extra_env=extra)
            made.sites[name].start(wait_ready=False)  # the three start in parallel
        for site in made.sites.values():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        wait_for(lambda: all(s["online"] for s in admin.list_sites()), what="sites online")
        yield made
    finally:
        for site in made.sites.values():
            site.stop()
        admin.close()
        hub.stop()
        trusted.undo()
