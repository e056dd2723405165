"""Signing in to the dashboard: a token exchanged for a session cookie, never shown again;
CSRF and origin checks on every cookie-authenticated change; sessions end with their token."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import UiFleet, Watched


def hub_http(fleet: UiFleet) -> httpx.Client:
    """A plain HTTP client of the hub that trusts the fleet CA (no token, no cookie)."""
    trust = ssl.create_default_context(cafile=str(fleet.hub.ca_file))
    return httpx.Client(base_url=fleet.hub.url, verify=trust)


def test_sign_in_sets_a_strict_cookie_and_shows_no_token(
    open_ui: Callable[..., Watched], ui_fleet: UiFleet
) -> None:
    ui = open_ui("viewer")
    page = ui.page
    assert page.url.endswith("/ui/fleet")
    for name in ui_fleet.sites:
        assert page.locator(f"tr[data-site='{name}']").count() == 1
    cookies = {c["name"]: c for c in page.context.cookies()}
    cookie = cookies["mf_session"]
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True  # the hub speaks TLS
    assert cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0  # it expires
    token = ui_fleet.tokens["viewer"]
    assert token not in page.content()
    assert token not in page.url
    assert token not in cookie["value"]
    # Scripts cannot read the cookie.
    assert "mf_session" not in page.evaluate("document.cookie")


def test_a_wrong_token_is_refused_on_the_form(open_ui: Callable[..., Watched]) -> None:
    ui = open_ui(None)
    response = ui.goto("/ui/fleet")
    assert "/ui/login" in ui.page.url  # redirected to sign in
    assert response is not None
    ui.page.fill("#token", "mf_not-a-real-token")
    ui.page.click("form.login button[type=submit]")
    ui.page.wait_for_selector("p.error")
    assert "unknown token" in ui.page.inner_text("p.error")
    assert not ui.page.context.cookies()
    # The failed sign-in answered 401, which the browser logs as a console error: expected.
    ui.console_errors.clear()


@dataclass
class Browserish:
    """An HTTP client holding a session cookie, and the CSRF token its page showed."""

    client: httpx.Client
    csrf: str

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)


@pytest.fixture
def http(ui_fleet: UiFleet) -> Iterator[Callable[[str], Browserish]]:
    """``http(role)``: a client signed in as that role by cookie, no Authorization header."""
    made: list[httpx.Client] = []

    def make(role: str) -> Browserish:
        client = hub_http(ui_fleet)
        answer = client.post(
            "/ui/login", data={"token": ui_fleet.tokens[role], "next": "/ui/fleet"}
        )
        assert answer.status_code == 303, answer.text
        page = client.get("/ui/fleet")
        marker = '<meta name="csrf-token" content="'
        start = page.text.index(marker) + len(marker)
        made.append(client)
        return Browserish(client, page.text[start : page.text.index('"', start)])

    yield make
    for client in made:
        client.close()


def test_a_change_by_cookie_needs_the_csrf_token(http: Callable[[str], Browserish]) -> None:
    operator = http("operator")
    # Without the token: refused before the permission is even looked at.
    bare = operator.post("/api/v1/rollouts/r-unknown/pause")
    assert bare.status_code == 403
    assert "X-CSRF-Token" in bare.json()["error"]["message"]
    # A wrong one too.
    wrong = operator.post("/api/v1/rollouts/r-unknown/pause", headers={"X-CSRF-Token": "0" * 40})
    assert wrong.status_code == 403
    # With it, the call reaches the rollout API (which knows no such rollout).
    ok = operator.post(
        "/api/v1/rollouts/r-unknown/pause",
        headers={"X-CSRF-Token": operator.csrf},
    )
    assert ok.status_code == 404, ok.text
    # From another origin: refused even with the token.
    foreign = operator.post(
        "/api/v1/rollouts/r-unknown/pause",
        headers={"X-CSRF-Token": operator.csrf, "Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    # Reads need no CSRF token.
    assert operator.get("/api/v1/sites").status_code == 200


def test_a_viewer_cannot_act_through_its_session(http: Callable[[str], Browserish]) -> None:
    viewer = http("viewer")
    answer = viewer.post(
        "/api/v1/rollouts/r-unknown/pause",
        headers={"X-CSRF-Token": viewer.csrf},
    )
    assert answer.status_code == 403
    assert "may not deployments:write" in answer.json()["error"]["message"]


def test_revoking_the_token_ends_its_sessions(ui_fleet: UiFleet) -> None:
    created = ui_fleet.admin.create_token("short-lived", "viewer")
    with hub_http(ui_fleet) as client:
        assert client.post("/ui/login", data={"token": created.token}).status_code == 303
        assert client.get("/ui/fleet").status_code == 200
        ui_fleet.admin.revoke_token(created.id)
        after = client.get("/ui/fleet")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/ui/login")
        assert client.get("/api/v1/sites").status_code == 401


def test_sign_in_goes_only_to_dashboard_paths(ui_fleet: UiFleet) -> None:
    with hub_http(ui_fleet) as client:
        for target in ("https://evil.example/x", "//evil.example/ui/", "/api/v1/sites"):
            answer = client.post(
                "/ui/login", data={"token": ui_fleet.tokens["viewer"], "next": target}
            )
            assert answer.status_code == 303
            assert answer.headers["location"] == "/ui/fleet", target


def test_an_infer_token_cannot_sign_in(ui_fleet: UiFleet) -> None:
    with hub_http(ui_fleet) as client:
        answer = client.post("/ui/login", data={"token": ui_fleet.infer})
        assert answer.status_code == 401
        assert "cannot sign in to the dashboard" in answer.text
        assert "mf_session" not in answer.cookies
