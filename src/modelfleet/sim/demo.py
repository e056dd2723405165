"""The demo scenario. Today: hub, central training, signed push, list, verified pull."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess


def run_demo(*, keep: bool = False, fast: bool = False, json_out: bool = False) -> bool:
    """Run the scenario; returns True when every expectation held."""
    console = Console(stderr=json_out)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="modelfleet-demo-"))
    checks: dict[str, bool] = {}
    summary: dict[str, Any] = {"workdir": str(workdir)}

    console.rule("[bold]modelfleet demo")
    with console.status("initialising the hub"):
        init = init_hub(workdir / "hub")
        hub = HubProcess(workdir / "hub").start()
    console.print(f"hub up at {hub.url} (SQLite + local artifacts in {workdir / 'hub'})")
    summary["hub_url"] = hub.url
    try:
        with console.status("training a classifier centrally"):
            from sklearn.datasets import load_breast_cancer
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            from modelfleet.export import from_sklearn

            features, y = load_breast_cancer(return_X_y=True)
            features = features.astype(np.float32)
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
                features, y
            )
            accuracy = float(model.score(features, y))
            onnx_path = from_sklearn(model, features[:5], path=workdir / "classifier.onnx")
        console.print(f"trained: training accuracy {accuracy:.3f}, exported to ONNX")

        with HubClient(hub.url, init.admin_token) as hc:
            pushed = hc.push(
                onnx_path,
                "machine-health",
                training_regions=["eu-west", "us-east"],
                alias="production",
                metrics={"accuracy": accuracy},
                description="demo classifier",
            )
            console.print(
                f"pushed machine-health:{pushed['version']} @production, "
                f"sha256:{pushed['digest'][:12]}, manifest signed by key {init.key_id}"
            )
            models = hc.list_models()
            checks["model_listed"] = any(m["name"] == "machine-health" for m in models)
            pulled = hc.pull("machine-health@production", workdir / "pulled.onnx")
            checks["pull_verified"] = (
                workdir / "pulled.onnx"
            ).read_bytes() == onnx_path.read_bytes()
            summary["version"] = pulled["version"]

        summary["checks"] = checks
        summary["seconds"] = round(time.monotonic() - started, 2)
        ok = all(checks.values())
        summary["ok"] = ok
        if json_out:
            print(json.dumps(summary, indent=2))
        else:
            for name, passed in checks.items():
                console.print(f"  {'[green]ok[/green]' if passed else '[red]FAILED[/red]'}  {name}")
            console.print(f"done in {summary['seconds']} s")
            if keep:
                console.print(
                    f"\nthe hub stays up: export MODELFLEET_HUB_URL={hub.url} "
                    f"MODELFLEET_TOKEN={init.admin_token}\nthen try `modelfleet model ls`; "
                    "Ctrl-C to stop"
                )
        if keep:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return ok
    finally:
        hub.stop()
