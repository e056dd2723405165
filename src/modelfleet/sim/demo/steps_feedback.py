"""Ground truth: each plant tells its site which machines really failed, the sites ship only
counts, and the hub's accuracy per site x version must match what the plants themselves know.
Split from the other step modules only to keep each short."""

from __future__ import annotations

from collections import Counter

from modelfleet.sim.demo.feedback import FeedbackLoop
from modelfleet.sim.demo.fleet import MODEL
from modelfleet.sim.demo.fleet import site_name as site_of
from modelfleet.sim.demo.scene import Scene
from modelfleet.sim.plant_data import PLANTS

#: The hub answers accuracy to six decimals.
ROUNDING = 1e-6


def start_feedback(scene: Scene) -> None:
    """From the first answers on, each plant feeds back the truth a moment after the answer."""
    fleet = scene.fleet
    scene.feedback = FeedbackLoop(
        scene.lines,
        {site_of(p): fleet.lan[p].url for p in PLANTS},
        token=fleet.infer_token,
        ca_file=fleet.ca_file,
    )
    scene.feedback.start()


def ground_truth(scene: Scene) -> bool:
    """After the lines stop, every label the sites accepted is counted at the hub, and the
    hub's accuracy per site x version is the plants' own (computed here from the answers)."""
    run, admin, loop = scene.run, scene.admin, scene.feedback
    if loop is None:
        return True
    loop.stop()
    own: dict[tuple[str, int], tuple[int, int]] = {}
    for site, answers in loop.posted.items():
        right: Counter[int] = Counter()
        total: Counter[int] = Counter()
        for a in answers:
            version = int(a.version or 0)
            total[version] += 1
            right[version] += int(a.predicted == a.truth)
        for version, n in total.items():
            own[(site, version)] = (right[version], n)
    hub: dict[tuple[str, int], tuple[float | None, int]] = {}

    def counted() -> bool:
        hub.clear()
        for f in admin.get_accuracy(MODEL)["figures"]:
            hub[(f["site"], int(f["version"]))] = (f["value"], int(f["count"]))
        labels = Counter[str]()
        for (site, _), (_, count) in hub.items():
            labels[site] += count
        return all(labels[s] == n for s, n in loop.accepted.items())

    run.wait(counted, 30 + scene.sizes.window_s * 4, "accuracy at the hub")
    mismatched = {
        f"{site} v{version}": {"hub": hub.get((site, version)), "plants": (right, n)}
        for (site, version), (right, n) in own.items()
        if hub.get((site, version), (None, 0))[1] != n
        or abs((hub[(site, version)][0] or 0.0) - right / n) > ROUNDING
    }
    run.figures["ground_truth"] = {
        "mismatched": mismatched,
        "accepted": dict(loop.accepted),
        "dropped": dict(loop.dropped),
        "hub": {
            f"{site} v{version}": {"accuracy": value, "labels": n}
            for (site, version), (value, n) in sorted(hub.items())
        },
    }
    run.event(
        "ground truth fed back: "
        + ", ".join(
            f"{site} v{version} {value:.3f} ({n} labels)"
            for (site, version), (value, n) in sorted(hub.items())
            if value is not None
        )
    )
    run.check(
        "accuracy_from_feedback",
        bool(own) and not mismatched and not sum(loop.dropped.values()),
        f"hub accuracy per site x version == the plants' own over {sum(loop.accepted.values())} "
        f"labels ({sum(loop.dropped.values())} dropped)"
        + (f"; differ: {mismatched}" if mismatched else ""),
    )
    return True
