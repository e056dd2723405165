"""The demo's sizes, its running record (timeline, checks, figures) and its waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from modelfleet.errors import ModelfleetError


@dataclass(frozen=True)
class Sizes:
    history: int  # rows per plant pooled centrally for the first model
    local: int  # rows each plant keeps locally (federated training)
    holdout: int
    epochs: int
    fl_rounds: int
    outage_s: float
    drift_s: float
    window_s: float
    traffic_s: float
    pace_s: float

    @classmethod
    def pick(cls, fast: bool) -> Sizes:
        if fast:
            return cls(600, 2000, 1500, 30, 4, 4.0, 6.0, 0.5, 3.0, 0.02)
        return cls(600, 4000, 3000, 30, 10, 15.0, 12.0, 1.0, 10.0, 0.01)


@dataclass
class Run:
    console: Console
    started: float = field(default_factory=time.monotonic)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def event(self, text: str) -> None:
        at = time.monotonic() - self.started
        self.timeline.append((round(at, 1), text))
        self.console.print(f"[dim]{at:6.1f}s[/dim] {text}", highlight=False)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = ok
        mark = "[green]ok[/green]" if ok else "[red]FAILED[/red]"
        self.console.print(f"        {mark} {detail}", highlight=False)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> bool:
        """Poll ``predicate`` with a live spinner naming what the demo waits for."""
        started = time.monotonic()
        with self.console.status(f"waiting for {what}") as status:
            while time.monotonic() - started < timeout:
                try:
                    if predicate():
                        return True
                except ModelfleetError:  # e.g. the hub restarting: ask again
                    pass
                status.update(f"waiting for {what} ({time.monotonic() - started:.0f} s)")
                time.sleep(0.2)
        return False

    def pause(self, seconds: float, what: str) -> None:
        """Let the fleet run for ``seconds``, with the spinner saying why."""
        self.wait(lambda: False, seconds, what)
