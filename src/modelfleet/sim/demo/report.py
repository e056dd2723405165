"""The demo's closing report, drawn from the measured summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def render(console: Console, summary: dict[str, Any]) -> None:
    console.rule("[bold]summary")
    timeline = Table(title="Timeline", show_header=True, header_style="bold")
    timeline.add_column("t (s)", justify="right")
    timeline.add_column("event", overflow="fold")
    for at, text in summary.get("timeline", []):
        timeline.add_row(f"{at:.1f}", text)
    console.print(timeline)

    plants = Table(title="Plants", header_style="bold")
    for column in (
        "plant",
        "requests",
        "failed",
        "local p50/p99 ms",
        "central p50/p99 ms",
        "p50 cut",
    ):
        plants.add_column(column, justify="right" if column != "plant" else "left")
    latency = summary.get("latency", {})
    for name, row in summary.get("plants", {}).items():
        lat = latency.get(name, {})
        cut = "-"
        if lat.get("local_p50_ms") and lat.get("central_p50_ms"):
            cut = f"{100 * (1 - lat['local_p50_ms'] / lat['central_p50_ms']):.0f} %"
        plants.add_row(
            name,
            str(row["requests"]),
            str(row["failed"]),
            f"{_ms(lat.get('local_p50_ms'))} / {_ms(lat.get('local_p99_ms'))}",
            f"{_ms(lat.get('central_p50_ms'))} / {_ms(lat.get('central_p99_ms'))}",
            cut,
        )
    console.print(plants)

    accuracy = summary.get("accuracy")
    if accuracy:
        table = Table(title="Held-out data per plant: central vs federated", header_style="bold")
        for column in ("plant", "accuracy", "balanced accuracy", "failures caught"):
            table.add_column(column)
        for name, scores in accuracy.items():
            c, f = scores["central"], scores["federated"]
            table.add_row(
                name,
                f"{c['accuracy']:.3f} -> {f['accuracy']:.3f}",
                f"{c['balanced_accuracy']:.3f} -> {f['balanced_accuracy']:.3f}",
                f"{c['failure_recall']:.0%} -> {f['failure_recall']:.0%}",
            )
        console.print(table)

    _outcomes(console, summary.get("outcomes"))

    fed = summary.get("federated")
    if fed:
        console.print(
            f"federated job {fed['job']}: {fed['state']}, {len(fed['rounds'])} rounds, result "
            f"version {fed['result_version']}; declined: "
            + (", ".join(f"{s} ({r})" for s, r in fed["declined"].items()) or "none"),
            highlight=False,
        )
    bad = summary.get("bad_release")
    if bad:
        console.print(
            f"bad release {bad['version']}: {bad['state']} at wave {bad['failed_at_wave']} on "
            f"{bad['gate']}: canary p99 {_ms(bad['canary_p99_ms'])} ms vs the previous "
            f"version's {_ms(bad['baseline_p99_ms'])} ms ({bad['ratio']}x); ran it: "
            + (", ".join(bad["sites_that_ran_it"]) or "none"),
            highlight=False,
        )
    telemetry = summary.get("telemetry")
    if telemetry:
        console.print(
            f"telemetry: requests answered per site {telemetry['answered']}, "
            f"counted at the hub {telemetry['hub_totals']}",
            highlight=False,
        )
    drift = summary.get("drift")
    if drift is not None:
        console.print(f"drift flags: {drift or 'none'}", highlight=False)

    checks = Table(title="Expectations", header_style="bold")
    checks.add_column("check")
    checks.add_column("held")
    for name, ok in summary.get("checks", {}).items():
        checks.add_row(name, "[green]yes[/green]" if ok else "[red]NO[/red]")
    console.print(checks)
    verdict = (
        "[green]all expectations held[/green]" if summary.get("ok") else "[red]some failed[/red]"
    )
    where = "" if summary.get("ok") else f" (logs in {summary.get('workdir')})"
    console.print(f"{verdict} in {summary.get('seconds')} s{where}")


def _outcomes(console: Console, outcomes: dict[str, Any] | None) -> None:
    """Maintenance with and without the models (sim/demo/outcomes.py): counts measured on
    the demo's answers, hours per event assumed and printed."""
    if not outcomes or not outcomes["fleet"]["answers"]:
        return
    table = Table(
        title=f"Maintenance over {outcomes['fleet']['answers']} answers: run-to-failure -> "
        "the fleet's models",
        header_style="bold",
    )
    for column in ("plant", "failures", "caught", "missed", "false alarms"):
        table.add_column(column, justify="left" if column == "plant" else "right")
    table.add_column("downtime h", justify="right")
    table.add_column("saved", justify="right")
    rows = [*outcomes["plants"].items(), ("fleet", outcomes["fleet"])]
    for name, o in rows:
        saved = o["downtime_saved"]
        table.add_row(
            name,
            str(o["failures"]),
            str(o["caught"]),
            str(o["missed"]),
            str(o["false_alarms"]),
            f"{o['downtime_without_h']:.0f}->{o['downtime_with_h']:.0f}",
            "-" if saved is None else f"{saved:.0%}",
        )
    console.print(table)
    a = outcomes["assumptions"]
    console.print(
        f"assumed hours per event: breakdown {a['breakdown_h']:g}, planned intervention "
        f"{a['planned_h']:g}, false-alarm inspection {a['inspection_h']:g} "
        "(counts measured, hours assumed: sim/demo/outcomes.py)",
        highlight=False,
    )
