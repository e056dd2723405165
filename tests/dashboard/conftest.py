"""The dashboard's browser tests: a fleet of real processes (a hub and three sites on
loopback, shared by the package) and headless Chromium driven by Playwright.

Debian's ``/usr/bin/chromium`` is the browser (``.ci/run`` installs it; Playwright cannot
download its own here). Every page a test opens is watched: a console error, an uncaught
script error or a request to any host but the hub fails the test at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca
from tests.deploy.fleet import HUB_ENV, SITE_ENV, SITES, Fleet, env
from tests.waiting import wait_for

CHROMIUM = os.environ.get("MODELFLEET_TEST_CHROMIUM", "/usr/bin/chromium")
#: The flags a root, offline, headless Chromium needs here (no sandbox as root, no calls
#: home: the machine's closed network refuses them and they would show as foreign hosts).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@dataclass
class UiFleet(Fleet):
    """The rollout tests' fleet plus one token per dashboard role."""

    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="package")
def ui_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiFleet]:
    root = tmp_path_factory.mktemp("ui-fleet")
    init = init_hub(root / "hub")
    # The anomaly detector's loop every 2 s (default 10): the anomaly page's test waits less.
    with env({**HUB_ENV, "MODELFLEET_HUB_ANOMALY_INTERVAL_S": "2"}):
        hub = HubProcess(root / "hub").start()
    trusted = pytest.MonkeyPatch()  # package scope: undone in the finally below
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    made = UiFleet(root, hub, admin, init.admin_token)
    made.infer = admin.create_token("traffic", "infer").token
    made.tokens = {
        "admin": init.admin_token,
        "operator": admin.create_token("olga", "operator").token,
        "viewer": admin.create_token("victor", "viewer").token,
    }
    try:
        for name, labels in SITES.items():
            token = admin.add_site(name, labels)["enrollment_token"]
            made.sites[name] = SiteProcess(root / name, hub.url, token, extra_env={**SITE_ENV})
            made.sites[name].start(wait_ready=False)
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


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
            ".ci/run does"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """One browser page and what it did that a test must not see."""

    page: Any
    hub: str
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        return self.page.goto(f"{self.hub}{path}")

    def problems(self) -> list[str]:
        return [*self.console_errors, *(f"request to {u}" for u in self.foreign_requests)]


@contextmanager
def watched_pages(browser: Any, hub_url: str) -> Iterator[Callable[..., Watched]]:
    """``open(token, path)``: a fresh browser context on ``hub_url``, signed in with
    ``token`` (None: not signed in). On exit, fails on any console error, page error or
    request to a host other than the hub."""
    opened: list[tuple[Any, Watched]] = []
    hub_netloc = urlsplit(hub_url).netloc

    def make(token: str | None, path: str = "/ui/fleet") -> Watched:
        # The test browser does not hold the fleet CA; the hub's TLS is still on.
        context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1400, "height": 900}
        )
        page = context.new_page()
        watched = Watched(page, hub_url)
        page.on(
            "console",
            lambda msg: (
                watched.console_errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda exc: watched.console_errors.append(f"page error: {exc}"))

        def on_request(request: Any) -> None:
            parts = urlsplit(request.url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != hub_netloc:
                watched.foreign_requests.append(request.url)

        page.on("request", on_request)
        opened.append((context, watched))
        if token is not None:
            sign_in(watched, token, path)
        return watched

    yield make
    problems = [p for _, w in opened for p in w.problems()]
    for context, _ in opened:
        context.close()
    assert not problems, problems


@pytest.fixture
def open_ui(browser: Any, ui_fleet: UiFleet) -> Iterator[Callable[..., Watched]]:
    """``open_ui(role)``: a fresh browser context signed in with that role's token
    (``role=None``: not signed in), watched as :func:`watched_pages` says."""
    with watched_pages(browser, ui_fleet.hub.url) as open_page:

        def make(role: str | None = "viewer", *, path: str = "/ui/fleet") -> Watched:
            return open_page(None if role is None else ui_fleet.tokens[role], path)

        yield make


def sign_in(watched: Watched, token: str, path: str = "/ui/fleet") -> None:
    watched.goto(f"/ui/login?next={quote(path, safe='/')}")
    watched.page.fill("#token", token)
    watched.page.click("form.login button[type=submit]")
    watched.page.wait_for_url(f"**{path.split('?')[0]}*")
