"""Each plant's production line: requests through the SDK to its nearest permitted site,
plus a sample of the same requests sent the centralised way for comparison."""

from __future__ import annotations

import functools
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from modelfleet.errors import ModelfleetError
from modelfleet.routing.client import Client
from modelfleet.sim.demo.fleet import DATA_REGION, MODEL
from modelfleet.sim.plant_data import FEATURES

AIR = FEATURES.index("air_temperature_k")
#: A line keeps at most this many answers for the outcome figures (a long ``--keep`` run
#: must not grow without bound).
MAX_ANSWERS = 200_000


@dataclass
class LineStats:
    sent: int = 0
    failed: int = 0
    served_by: Counter[str] = field(default_factory=Counter)  # answers per site
    local_ms: list[float] = field(default_factory=list)
    central_ms: list[float] = field(default_factory=list)
    central_answers: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    #: Every answered request with the truth the plant learns later (see outcomes.py).
    answers: list[Answer] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """One prediction a plant acted on, and whether the machine really failed: the truth
    becomes known after the fact (the machine breaks down or it does not), and is what the
    plant feeds back to its site by request id."""

    request_id: str
    site: str
    version: str | None
    predicted: int
    truth: int
    at: float  # when it was answered (time.time())


class PlantLine(threading.Thread):
    """Sends one row per request, paced, until stopped. ``sensor_drift_k`` shifts the air
    temperature sensor (a calibration drift) from the moment it is set."""

    def __init__(
        self,
        plant: str,
        *,
        hub_url: str,
        token: str,
        central_url: str,
        rows: np.ndarray,
        cache_dir: Path,
        pace_s: float,
        central_every: int = 4,
        ca_file: Path | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        """``ca_file``: the fleet CA the hub and the sites are verified against. ``labels``:
        the truth for each row (did the machine fail), recorded with every answer."""
        super().__init__(name=f"line-{plant}", daemon=True)
        self._again = functools.partial(
            PlantLine, plant, hub_url=hub_url, token=token, central_url=central_url,
            rows=rows, cache_dir=cache_dir, pace_s=pace_s, central_every=central_every,
            ca_file=ca_file, labels=labels,
        )  # fmt: skip
        self.plant = plant
        self.rows = rows.astype(np.float32)
        self.labels = None if labels is None else labels.astype(np.int64)
        self.central_url = central_url
        self.pace_s = pace_s
        self.central_every = central_every
        self.stats = LineStats()
        self.sensor_drift_k = 0.0
        #: Inputs (feature index -> the value it reads) whose sensor is stuck: a fault the
        #: hub's anomaly detector sees in the window sketches (min == max).
        self.stuck: dict[int, float] = {}
        self._halt = threading.Event()
        self._client = Client(
            hub_url,
            token,
            data_region=DATA_REGION[plant],
            cache_path=cache_dir / f"directory-{plant}.json",
            deadline_s=10.0,
            ca_file=ca_file,
        )
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        )
        self._http = httpx.Client(
            timeout=10.0, verify=verify, headers={"Authorization": f"Bearer {token}"}
        )
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._halt.set()

    def again(self) -> PlantLine:
        """A new, unstarted line with the same settings (a thread starts only once): what
        ``demo --keep`` runs so the kept fleet's dashboard stays live."""
        return self._again()

    def snapshot(self) -> LineStats:
        with self._lock:
            return LineStats(
                self.stats.sent,
                self.stats.failed,
                Counter(self.stats.served_by),
                list(self.stats.local_ms),
                list(self.stats.central_ms),
                self.stats.central_answers,
                list(self.stats.failures),
                list(self.stats.answers),
            )

    def answers_since(self, index: int) -> list[Answer]:
        """The answers from ``index`` on (what the plant has not yet fed back)."""
        with self._lock:
            return self.stats.answers[index:]

    def run(self) -> None:
        i = 0
        try:
            while not self._halt.is_set():
                row = self.rows[i % len(self.rows)][None, :].copy()
                if self.sensor_drift_k:
                    row[:, AIR] += np.float32(self.sensor_drift_k)
                for feature, value in self.stuck.items():
                    row[:, feature] = np.float32(value)
                self._local(
                    row, None if self.labels is None else int(self.labels[i % len(self.rows)])
                )
                if self.central_every and i % self.central_every == 0:
                    self._central(row)
                i += 1
                self._halt.wait(self.pace_s)
        finally:
            self._client.close()
            self._http.close()

    def _local(self, row: np.ndarray, truth: int | None) -> None:
        try:
            result = self._client.infer_detailed(MODEL, {"X": row})
        except ModelfleetError as exc:
            with self._lock:
                self.stats.sent += 1
                self.stats.failed += 1
                self.stats.failures.append((time.time(), exc.message))
            return
        with self._lock:
            self.stats.sent += 1
            self.stats.served_by[result.site] += 1
            self.stats.local_ms.append(result.latency_s * 1000)
            label = result.outputs.get("label")
            if truth is not None and label is not None and len(self.stats.answers) < MAX_ANSWERS:
                self.stats.answers.append(
                    Answer(
                        result.request_id,
                        result.site,
                        result.model_version,
                        int(np.asarray(label).ravel()[0]),
                        truth,
                        time.time(),
                    )
                )

    def _central(self, row: np.ndarray) -> None:
        body = {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [1, row.shape[1]],
                    "data": row.ravel().tolist(),
                }
            ]
        }
        started = time.perf_counter()
        try:
            response = self._http.post(f"{self.central_url}/v2/models/{MODEL}/infer", json=body)
        except httpx.TransportError:
            return
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            if response.status_code != 404:  # a 404 never reached a model: not in telemetry
                self.stats.central_answers += 1
            if response.status_code == 200:
                self.stats.central_ms.append(elapsed)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
