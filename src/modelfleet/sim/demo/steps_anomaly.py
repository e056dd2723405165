"""The scenario's anomaly step: a plant's speed sensor sticks at one value; the hub's
detector finds it in the window sketches (no row reaches the hub) and the dashboard shows it.
Split from :mod:`modelfleet.sim.demo.steps` only to keep each module short."""

from __future__ import annotations

from typing import Any

from modelfleet.sim.demo.fleet import MODEL
from modelfleet.sim.demo.fleet import site_name as site_of
from modelfleet.sim.demo.scene import Scene
from modelfleet.sim.plant_data import FEATURES

STUCK_PLANT = "ap-south"
STUCK_FEATURE = "rotational_speed_rpm"
STUCK_VALUE = 1500.0  # rpm: a plausible reading, frozen


def _column_of(scene: Scene, label: str) -> str:
    """The input column the sites' sketches use for ``label`` (e.g. ``X[3]``)."""
    for result in scene.admin.get_drift(MODEL, version=scene.v1).get("results", []):
        for feature in result.get("features", []):
            if feature.get("label") == label and feature.get("role") == "input":
                return str(feature["feature"])
    return label


def _stuck(found: list[dict[str, Any]], column: str) -> set[str]:
    return {a["site"] for a in found if a["metric"] == f"stuck:{column}"}


def stuck_sensor(scene: Scene) -> bool:
    """ap-south's rotational-speed sensor freezes; only that plant and input are flagged."""
    run, admin, lines = scene.run, scene.admin, scene.lines
    column = _column_of(scene, STUCK_FEATURE)
    # A short demo: 10 s buckets instead of the default 60 s (a stuck run is judged when its
    # bucket settles), as `modelfleet anomalies --model machine-health --set bucket_s=10` does.
    admin.set_anomaly_settings(MODEL, {"bucket_s": 10})
    lines[STUCK_PLANT].stuck[FEATURES.index(STUCK_FEATURE)] = STUCK_VALUE
    run.event(f"{STUCK_PLANT}: the {STUCK_FEATURE} sensor sticks at {STUCK_VALUE:.0f}")
    flagged: set[str] = set()

    def reported() -> bool:
        found = admin.anomalies(model=MODEL, open_only=True)["anomalies"]
        flagged.clear()
        flagged.update(_stuck(found, column))
        return site_of(STUCK_PLANT) in flagged

    # The detector needs `stuck_windows` windows in a row (6 by default) and then its next
    # pass; the deadline allows a machine several times slower.
    run.wait(reported, scene.sizes.window_s * 6 * 10 + 60, "the stuck sensor to be flagged")
    lines[STUCK_PLANT].stuck.clear()
    run.figures["anomaly"] = {"metric": f"stuck:{column}", "sites": sorted(flagged)}
    hub = scene.fleet.hub
    where = f" — shown at {hub.url}/ui/anomalies" if hub is not None else ""
    sites = ", ".join(sorted(flagged)) or "no site"
    run.event(f"anomaly: stuck:{column} ({STUCK_FEATURE}) at {sites}{where}")
    run.check(
        "stuck_sensor_flagged",
        flagged == {site_of(STUCK_PLANT)},
        f"flagged {site_of(STUCK_PLANT)}'s {STUCK_FEATURE} as stuck, no other plant",
    )
    return True
