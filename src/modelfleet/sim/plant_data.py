"""Synthetic predictive-maintenance data modelled on the AI4I 2020 data set description.

Matzka (2020), "Explainable Artificial Intelligence for Predictive Maintenance
Applications", describes the generator behind the public AI4I 2020 set; this module
follows that description (it ships no copy of the data):

- product type L / M / H (quality variants; each adds 2 / 3 / 5 minutes of tool wear per
  process);
- air temperature [K]: a random walk around 300 K, standard deviation 2 K;
- process temperature [K]: air temperature + 10 K plus a random walk of std 1 K;
- rotational speed [rpm]: from the delivered power at the sampled torque, with normal noise
  (we centre the power at 6.3 kW, which reproduces the published speed statistics: mean
  about 1540 rpm, std about 180);
- torque [Nm]: normal around 40 Nm, std 10 Nm, never negative;
- tool wear [min]: grows with each process, the tool is replaced at 200-240 min.

A machine fails (label 1) when any of five independent modes fires: tool wear failure
(TWF, wear in the replacement window), heat dissipation failure (HDF: air-process
difference below 8.6 K and speed below 1380 rpm), power failure (PWF: power below 3500 W
or above 9000 W), overstrain failure (OSF: wear x torque above 11,000 / 12,000 / 13,000
min.Nm for L / M / H) and random failure (RNF, 0.1 %).

Each plant has its own operating conditions — climate, product mix, machine age — so the
plants' data differ as real plants' do; ``drift`` shifts a plant's conditions later on
(a hotter summer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

FEATURES = (
    "product_type",  # 0 = L, 1 = M, 2 = H
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
)
TYPE_WEAR = np.array([2.0, 3.0, 5.0])
#: Autocorrelation of the temperature walks from one process to the next (AI4I gives the
#: spread, not the persistence): readings wander, but a few hundred processes cover them.
PERSISTENCE = 0.8
OSF_LIMIT = np.array([11_000.0, 12_000.0, 13_000.0])


@dataclass(frozen=True)
class Plant:
    """Operating conditions of one plant."""

    name: str
    region: str
    jurisdiction: str
    provider: str
    tier: str
    mean_air_k: float  # climate
    product_mix: tuple[float, float, float]  # share of L, M, H
    torque_mean_nm: float  # load
    wear_start_min: float  # machine age: how worn tools are when the line starts

    def hotter(self, air_shift_k: float) -> Plant:
        """The same plant in a hotter season: the climate moves both temperatures."""
        return replace(self, mean_air_k=self.mean_air_k + air_shift_k)


# Differences are real but moderate, as between plants of one manufacturer: enough that each
# plant's data is its own, not so much that normal operation looks like drift.
_EU = Plant("eu-west", "eu-west", "EU", "aws", "edge", 299.6, (0.55, 0.3, 0.15), 39, 0)
_US = Plant("us-east", "us-east", "US", "gcp", "cloud", 300.0, (0.45, 0.35, 0.2), 40.5, 20)
_AP = Plant("ap-south", "ap-south", "IN", "azure", "edge", 300.3, (0.5, 0.3, 0.2), 41.5, 60)
PLANTS: dict[str, Plant] = {p.name: p for p in (_EU, _US, _AP)}


def generate(plant: Plant, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` consecutive processes at ``plant``: FP32 features ``[n, 6]`` and int64 labels."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=np.asarray(plant.product_mix))
    air = plant.mean_air_k + _walk(rng, n, 2.0)
    process = air + 10.0 + _walk(rng, n, 1.0)
    torque = np.clip(rng.normal(plant.torque_mean_nm, 10.0, n), 3.0, None)
    # Speed follows from the delivered power at the given torque, with noise.
    watts = rng.normal(6300.0, 500.0, n)
    rpm = np.clip(watts / torque * 60.0 / (2 * np.pi) + rng.normal(0, 50.0, n), 1150.0, 2900.0)
    wear = _tool_wear(rng, kind, plant.wear_start_min)
    power = torque * rpm * 2 * np.pi / 60.0
    twf = (wear >= 200.0) & (rng.random(n) < 0.05)
    hdf = ((process - air) < 8.6) & (rpm < 1380.0)
    pwf = (power < 3500.0) | (power > 9000.0)
    osf = wear * torque > OSF_LIMIT[kind]
    rnf = rng.random(n) < 0.001
    label = (twf | hdf | pwf | osf | rnf).astype(np.int64)
    features = np.column_stack([kind, air, process, rpm, torque, wear]).astype(np.float32)
    return features, label


def _walk(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    """A mean-reverting random walk with the given stationary standard deviation."""
    phi = PERSISTENCE
    noise = rng.normal(0.0, std * np.sqrt(1 - phi**2), n)
    out = np.empty(n)
    level = rng.normal(0.0, std)
    for i in range(n):
        level = phi * level + noise[i]
        out[i] = level
    return out


def _tool_wear(rng: np.random.Generator, kind: np.ndarray, start: float) -> np.ndarray:
    wear = np.empty(kind.shape[0])
    level = start + rng.uniform(0, 200.0)
    limit = rng.uniform(200.0, 240.0)
    for i, k in enumerate(kind):
        level += TYPE_WEAR[k]
        if level > limit:  # tool replaced
            level, limit = 0.0, rng.uniform(200.0, 240.0)
        wear[i] = level
    return wear


def sensor_drift(features: np.ndarray, feature: str, shift: float) -> np.ndarray:
    """A sensor that reads ``shift`` too high (calibration drift): only that column moves."""
    drifted = features.copy()
    drifted[:, FEATURES.index(feature)] += np.float32(shift)
    return drifted


def failure_rate(labels: np.ndarray) -> float:
    return float(labels.mean()) if labels.size else 0.0
