"""`token create --ttl`, `token ls` with expiry and last use, the last admin, on a real hub."""

from __future__ import annotations

import json
import time

from modelfleet.hub_client import HubClient
from tests.cli.conftest import RunningHub


def test_ttl_listing_and_the_last_admin_through_the_cli(running_hub: RunningHub) -> None:
    made = running_hub.cli("token", "create", "--role", "viewer", "--name", "ci", "--ttl", "12h")
    assert made.returncode == 0, made.stderr
    assert "expires" in made.stdout
    secret = made.stdout.strip().splitlines()[-1]

    for bad, needle in (("12x", "not a duration"), ("500d", "longer than the hub allows")):
        refused = running_hub.cli("token", "create", "--role", "viewer", "--ttl", bad)
        assert refused.returncode == 1
        assert needle in refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2  # one message, maybe wrapped

    assert running_hub.cli("model", "ls", token=secret).returncode == 0
    listing = running_hub.cli("token", "ls")
    assert listing.returncode == 0, listing.stderr
    assert "EXPIRES" in listing.stdout
    assert "LAST USED" in listing.stdout

    with HubClient(running_hub.process.url, running_hub.token) as hc:

        def used() -> bool:
            return next(t for t in hc.list_tokens() if t.name == "ci").last_used_at is not None

        deadline = time.monotonic() + 30
        while not used() and time.monotonic() < deadline:
            time.sleep(0.2)
    rows = json.loads(running_hub.cli("token", "ls", "--json").stdout)
    assert next(r for r in rows if r["name"] == "ci")["last_used_at"] is not None
    admin = next(r for r in rows if r["role"] == "admin")
    assert admin["expires_at"] is not None  # hub init's admin token expires too
    last = running_hub.cli("token", "revoke", admin["id"])
    assert last.returncode == 1
    assert "last active admin token" in last.stderr
    assert "hub token recover" in last.stderr
    assert "Traceback" not in last.stderr
