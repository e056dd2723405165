"""Screenshots of every dashboard page from a running fleet (not a benchmark: a tool that
lives beside them because it drives a live fleet the same way).

    modelfleet demo --keep     # prints MODELFLEET_HUB_URL, MODELFLEET_TOKEN, MODELFLEET_CA_FILE
    export ...                 # the three values it printed
    .venv/bin/python bench/dashboard_screenshots.py --out docs/dashboard

Signs in with the token (the sign-in form, as a person would), finds a rollout, a model,
a drifted feature and a federated job through the API, and writes one PNG per page. Uses
Debian's Chromium (``/usr/bin/chromium``) headless; the fleet CA is not installed in that
browser, so certificate errors are ignored for this tool only.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _api(hub: str, token: str, ca: str | None) -> httpx.Client:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    return httpx.Client(
        base_url=hub, headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30
    )


def pages(api: httpx.Client) -> list[tuple[str, str]]:
    """(file name, path) for every page, with real ids taken from the fleet."""
    found: list[tuple[str, str]] = [
        ("fleet", "/ui/fleet"),
        ("fleet-by-region", "/ui/fleet?group=region"),
        ("models", "/ui/models"),
        ("rollouts", "/ui/rollouts"),
        ("anomalies", "/ui/anomalies"),
        ("federated", "/ui/federated"),
        ("audit", "/ui/audit"),
    ]
    models = api.get("/api/v1/models").json()
    name = models[0]["name"] if models else None
    if name:
        found += [
            ("model", f"/ui/models/{quote(name)}"),
            ("performance", f"/ui/performance?model={quote(name)}&range=1h"),
            ("drift", f"/ui/drift?model={quote(name)}"),
        ]
        drift = api.get(f"/api/v1/telemetry/drift/{quote(name)}").json()
        cells = [
            (r["site"], f["feature"], r["version"])
            for r in drift.get("results", [])
            for f in r.get("features", [])
            if f.get("drift")
        ] or [
            (r["site"], f["feature"], r["version"])
            for r in drift.get("results", [])
            for f in r.get("features", [])
        ]
        if cells:
            site, feature, version = cells[0]
            found.append(
                (
                    "drift-feature",
                    f"/ui/drift/{quote(name)}/{quote(site)}/{quote(feature)}?version={version}",
                )
            )
    rollouts = api.get("/api/v1/rollouts").json()
    if rollouts:
        found.append(("rollout", f"/ui/rollouts/{quote(rollouts[0]['id'])}"))
    jobs = api.get("/api/v1/federation/jobs").json()
    if jobs:
        found.append(("federated-job", f"/ui/federated/{quote(jobs[0]['id'])}"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", default=os.environ.get("MODELFLEET_HUB_URL"))
    parser.add_argument("--token", default=os.environ.get("MODELFLEET_TOKEN"))
    parser.add_argument("--ca-file", default=os.environ.get("MODELFLEET_CA_FILE"))
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not args.hub or not args.token:
        parser.error(
            "set MODELFLEET_HUB_URL and MODELFLEET_TOKEN (modelfleet demo --keep prints them)"
        )
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with _api(args.hub, args.token, args.ca_file) as api:
        targets = pages(api)
    problems: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1440, "height": 900}
        )
        page: Any = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.goto(f"{args.hub}/ui/login")
        page.fill("#token", args.token)
        page.click("form.login button[type=submit]")
        page.wait_for_url("**/ui/fleet*")
        for name, path in targets:
            page.goto(f"{args.hub}{path}")
            page.wait_for_load_state("load")
            page.wait_for_timeout(800)  # charts draw after load (a tool, not a test)
            shot = args.out / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"{shot}  <- {path}")
        browser.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
