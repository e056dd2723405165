"""The demo's fleet: a hub and three plant sites as real processes, each behind WAN links.

Each plant reaches its own site over a 1 ms plant LAN link; the "central" comparison sends
the same requests to the site in the hub's region (us-east) over links at realistic one-way
distances. Everything runs on loopback.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from modelfleet.sim.plant_data import FEATURES, PLANTS, Plant
from modelfleet.sim.wan import WanLink

MODEL = "machine-health"
HUB_REGION = "us-east"
LAN_DELAY_S = 0.001
#: One-way delay from each plant to the hub's region (eu-west -> us-east ~ 40 ms, ap-south
#: -> us-east ~ 110 ms, as between real cloud regions).
CENTRAL_DELAY_S = {"eu-west": 0.040, "us-east": 0.001, "ap-south": 0.110}
DATA_REGION = {"eu-west": "EU", "us-east": "US", "ap-south": "IN"}
#: ap-south's operator has not approved federated learning: its config says so.
FL_REFUSAL = {"ap-south": "IN data-protection review of model updates pending"}


def site_name(plant: str) -> str:
    return f"plant-{plant}"


def write_dataset(path: Path, features: np.ndarray, labels: np.ndarray) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*FEATURES, "failure"])
        for row, label in zip(features.tolist(), labels.tolist(), strict=True):
            writer.writerow([*row, label])
    return path


@dataclass
class DemoFleet:
    root: Path
    telemetry_window_s: float
    hub: HubProcess | None = None
    admin: HubClient | None = None
    token: str = ""
    #: What the plant lines call the sites with (an infer token; sites require one).
    infer_token: str = ""
    sites: dict[str, SiteProcess] = field(default_factory=dict)
    lan: dict[str, WanLink] = field(default_factory=dict)
    central: dict[str, WanLink] = field(default_factory=dict)

    @property
    def client(self) -> HubClient:
        if self.admin is None:
            raise RuntimeError("fleet not started")
        return self.admin

    def start_hub(self) -> None:
        init = init_hub(self.root / "hub")
        self.token = init.admin_token
        # A responsive rollout controller for a short demo (the default ticks every second).
        self.hub = HubProcess(
            self.root / "hub", extra_env={"MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3"}
        )
        self._start_hub_process()
        self.admin = HubClient(self.hub.url, self.token, ca_file=self.ca_file)
        self.infer_token = self.admin.create_token("demo-lines", "infer").token

    @property
    def ca_file(self) -> Path | None:
        """The fleet CA every client of the demo verifies the hub and the sites with."""
        return self.hub.ca_file if self.hub is not None and self.hub.tls else None

    @property
    def _scheme(self) -> Literal["http", "https"]:
        """What the WAN links in front of the sites relay (the TLS bytes pass untouched)."""
        return "https" if self.ca_file is not None else "http"

    def _start_hub_process(self) -> None:
        if self.hub is None:
            raise RuntimeError("no hub")
        self.hub.start()

    def kill_hub(self) -> None:
        if self.hub is not None:
            self.hub.kill()

    def restart_hub(self) -> None:
        self._start_hub_process()

    def start_site(self, plant: Plant, local_data: Path) -> SiteProcess:
        name = site_name(plant.name)
        token = self.client.add_site(
            name,
            {
                "region": plant.region,
                "jurisdiction": plant.jurisdiction,
                "provider": plant.provider,
                "tier": plant.tier,
            },
        )["enrollment_token"]
        state_dir = self.root / name
        state_dir.mkdir(parents=True, exist_ok=True)
        config = state_dir.parent / f"{name}.yaml"
        refusal = FL_REFUSAL.get(plant.name)
        config.write_text(
            yaml.safe_dump(
                {
                    "datasets": {
                        "maintenance": {"path": str(local_data), "label": "failure", "seed": 0}
                    },
                    "federation": {
                        "participate": refusal is None,
                        "reason": refusal or "",
                        "models": [f"{MODEL}*"],
                        "max_rounds_per_day": 500,
                    },
                }
            )
        )
        site = SiteProcess(state_dir, self.hub.url if self.hub else "", token)
        lan = WanLink(("127.0.0.1", site.port), delay_s=LAN_DELAY_S, scheme=self._scheme).start()
        site.extra_env = {
            "MODELFLEET_SITE_PUBLIC_URL": lan.url,
            "MODELFLEET_SITE_CONFIG_FILE": str(config),
            "MODELFLEET_SITE_TELEMETRY_WINDOW_S": str(self.telemetry_window_s),
            "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
            "MODELFLEET_SITE_FL_POLL_S": "5",
        }
        site.start()
        self.sites[plant.name] = site
        self.lan[plant.name] = lan
        return site

    def start_central_links(self) -> None:
        """Links from every plant to the hub region's site: the centralised alternative."""
        target = self.sites[HUB_REGION]
        for plant, delay in CENTRAL_DELAY_S.items():
            self.central[plant] = WanLink(
                ("127.0.0.1", target.port),
                delay_s=delay,
                jitter_s=delay * 0.05,
                seed=1,
                scheme=self._scheme,
            ).start()

    def close(self) -> None:
        for site in self.sites.values():
            site.stop()
        for link in [*self.lan.values(), *self.central.values()]:
            link.stop()
        if self.admin is not None:
            self.admin.close()
        if self.hub is not None:
            self.hub.stop()


__all__ = ["CENTRAL_DELAY_S", "DATA_REGION", "MODEL", "PLANTS", "DemoFleet", "site_name"]
