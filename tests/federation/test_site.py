"""The site's side: config file, CSV/Parquet data sets, consent checks, custom trainers."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelfleet.errors import InvalidInput
from modelfleet.federation import wire
from modelfleet.federation.specs import ModelSpec, flatten, init_weights
from modelfleet.federation.training import FitResult, TrainConfig
from modelfleet.site.federated import DAY_S, FederatedWorker, RoundLedger, SiteConfig
from modelfleet.site.trainer import Dataset, DatasetConfig, load_dataset, load_trainer
from modelfleet.transport.session import HubSession
from tests.federation.conftest import write_csv


class ConstantTrainer:
    """A custom trainer as a site operator would register it."""

    def fit(self, spec, weights, data: Dataset, config: TrainConfig, seed: int) -> FitResult:
        return FitResult({k: v + 1 for k, v in weights.items()}, len(data.y), {"custom": 1.0})

    def evaluate(self, spec, weights, data: Dataset) -> dict[str, float]:
        return {}


def _worker(tmp_path: Path, **federation) -> FederatedWorker:
    rng = np.random.default_rng(0)
    write_csv(tmp_path / "d.csv", rng.normal(size=(20, 3)), rng.integers(0, 2, 20))
    (tmp_path / "site.yaml").write_text(
        yaml.safe_dump(
            {
                "datasets": {"sensors": {"path": "d.csv", "eval_fraction": 0.25}},
                "federation": {"participate": True, "models": ["pump-*"], **federation},
                "trainers": {
                    "constant": "tests.federation.test_site:ConstantTrainer",
                    "broken": "no.such.module:Thing",
                },
            }
        )
    )
    config = SiteConfig.load(tmp_path / "site.yaml")
    return FederatedWorker(
        config, hub_url="http://127.0.0.1:9", site="s", token="t", state_dir=tmp_path
    )


def test_consent_checks_give_reasons(tmp_path: Path) -> None:
    worker = _worker(tmp_path, max_rounds_per_day=1)
    spec = ModelSpec(family="logistic", features=3)
    task = {"model": "pump-a", "data": "sensors", "trainer": "builtin"}
    assert worker.check(task, spec) is None
    assert "does not allow training model 'other'" in str(
        worker.check({**task, "model": "other"}, spec)
    )
    assert "no data set 'x'" in str(worker.check({**task, "data": "x"}, spec))
    assert "No module named" in str(worker.check({**task, "trainer": "broken"}, spec))
    wide = ModelSpec(family="softmax", features=5, classes=3)
    assert "has 3 features, the model expects 5" in str(worker.check(task, wide))
    worker.ledger.record()
    assert "limit of 1 federated rounds per day" in str(worker.check(task, spec))
    declared = worker.declaration()
    assert declared["participate"]
    assert declared["rounds_today"] == 1
    assert declared["trainers"] == ["builtin", "constant"]
    worker.stop()


def test_round_ledger_survives_restarts_torn_lines_and_old_rounds(tmp_path: Path) -> None:
    path = tmp_path / "rounds.log"
    ledger = RoundLedger(path)
    now = time.time()
    ledger.record(now - DAY_S - 5)  # older than a day
    ledger.record(now - 10)
    ledger.record(now - 1)
    with path.open("a") as log_file:
        log_file.write(f"{now:.3f}"[:6])  # a crash mid-append leaves a torn line
    reopened = RoundLedger(path)
    assert reopened.today() == 2
    # Opening compacted the log to the rounds that still count.
    assert [float(line) for line in path.read_text().splitlines()] == [now - 10, now - 1]


def test_refusing_site_declares_its_reason(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    worker.config.federation.participate = False
    worker.config.federation.reason = "audit running"
    assert worker.declaration()["participate"] is False
    assert worker.check(
        {"model": "pump-a", "data": "sensors"}, ModelSpec(family="logistic", features=3)
    ) == ("site config refuses federated jobs: audit running")
    worker.stop()


def test_custom_trainer_protocol(tmp_path: Path) -> None:
    trainer = load_trainer("tests.federation.test_site:ConstantTrainer")
    spec = ModelSpec(family="logistic", features=3)
    data = load_dataset(
        "d", DatasetConfig(path=write_csv(tmp_path / "x.csv", np.ones((4, 3)), np.zeros(4)))
    )
    fit = trainer.fit(spec, init_weights(spec), data, TrainConfig(), 0)
    assert fit.metrics == {"custom": 1.0}
    with pytest.raises(InvalidInput, match=r"package\.module:Object"):
        load_trainer("just_a_name")
    with pytest.raises(InvalidInput, match="lacks fit"):
        load_trainer("tests.federation.conftest:write_csv")


def test_csv_and_parquet_data_sets(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.arange(30, dtype=np.float64).reshape(10, 3)
    y = np.arange(10) % 2
    csv_data = load_dataset(
        "c", DatasetConfig(path=write_csv(tmp_path / "a.csv", x, y), eval_fraction=0.2)
    )
    assert csv_data.x.shape == (8, 3)
    assert csv_data.x_eval.shape == (2, 3)
    # A random hold-out, but both parts keep the file's order: the trainer's own seeded
    # shuffle then sees the same rows as any other run on the same file (e.g. Flower's).
    assert np.all(np.diff(csv_data.x[:, 0]) > 0)
    assert np.all(np.diff(csv_data.x_eval[:, 0]) > 0)
    assert sorted([*csv_data.x[:, 0], *csv_data.x_eval[:, 0]]) == list(x[:, 0])
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "target": y})
    pq.write_table(table, tmp_path / "a.parquet")
    parquet = load_dataset(
        "p",
        DatasetConfig(
            path=tmp_path / "a.parquet", label="target", features=["c", "a"], eval_fraction=0
        ),
    )
    assert parquet.features == ["c", "a"]
    assert parquet.x.shape == (10, 2)
    np.testing.assert_array_equal(parquet.x, x[:, [2, 0]])
    with pytest.raises(InvalidInput, match="labels must be integers"):
        load_dataset("bad", DatasetConfig(path=write_csv(tmp_path / "b.csv", x, y + 0.5)))
    with pytest.raises(InvalidInput, match="lacks feature columns"):
        load_dataset(
            "bad", DatasetConfig(path=tmp_path / "a.parquet", label="target", features=["zz"])
        )


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback HTTP server that records each request (path, Authorization)."""

    seen: list[tuple[str, str, str | None]]
    answers: dict[str, bytes]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        body = self.answers.get(self.path.partition("?")[0], b"{}")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, *args: object) -> None:
        """Silent: the test reads what was recorded, not a line per request on stderr."""


def _recording_server(answers: dict[str, bytes]):
    seen: list[tuple[str, str, str | None]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "answers": answers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_the_worker_never_follows_a_hub_given_url_with_its_credential(tmp_path: Path) -> None:
    """A task naming absolute URLs on another host: the worker builds the round's paths
    itself, on its hub, so its token never reaches the other host."""
    spec = ModelSpec(family="logistic", features=3)
    base = "/api/v1/federation/jobs/j1/rounds/1"
    weights = wire.pack({}, {"weights": flatten(spec, init_weights(spec))})
    hub, hub_seen = _recording_server({f"{base}/weights": weights})
    elsewhere, elsewhere_seen = _recording_server({})
    try:
        worker = _worker(tmp_path)
        worker.session = HubSession(f"http://127.0.0.1:{hub.server_port}", "site-secret")
        other = f"http://127.0.0.1:{elsewhere.server_port}/steal"
        task = {
            "job": "j1", "round": 1, "attempt": 1, "model": "pump-a", "data": "sensors",
            "trainer": "builtin", "spec": spec.model_dump(mode="json"),
            "train": {"local_epochs": 1}, "deadline_at": "2999-01-01T00:00:00+00:00",
            "weights_url": other, "update_url": other, "refusal_url": other,
        }  # fmt: skip
        result = worker.handle(task)
        assert result.kind == "update", result
        assert elsewhere_seen == []
        assert [(m, p.partition("?")[0], a) for m, p, a in hub_seen] == [
            ("GET", f"{base}/weights", "Bearer site-secret"),
            ("POST", f"{base}/updates", "Bearer site-secret"),
        ]
        bad = worker.handle({**task, "job": "../../sites/x", "attempt": 2})
        assert bad.kind == "skipped"
        assert "bad job id" in bad.detail
        with pytest.raises(InvalidInput, match="only paths on the hub"):
            worker.session.request("GET", other)
        assert elsewhere_seen == []
    finally:
        hub.shutdown()
        elsewhere.shutdown()
