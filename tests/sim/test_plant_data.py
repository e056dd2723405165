from __future__ import annotations

import numpy as np

from modelfleet.sim.plant_data import FEATURES, PLANTS, generate, sensor_drift


def test_plants_differ_and_failures_are_rare_but_present() -> None:
    means = {}
    for name, plant in PLANTS.items():
        features, labels = generate(plant, 5000, seed=3)
        assert features.shape == (5000, len(FEATURES))
        assert features.dtype == np.float32
        assert 0.01 < labels.mean() < 0.08, name  # AI4I 2020 has 3.4 % failures
        means[name] = features[:, FEATURES.index("air_temperature_k")].mean()
    assert means["eu-west"] < means["us-east"] < means["ap-south"]


def test_failure_modes_follow_the_documented_rules() -> None:
    features, labels = generate(PLANTS["us-east"], 20000, seed=5)
    air, process, rpm, torque, wear = (features[:, i] for i in range(1, 6))
    power = torque * rpm * 2 * np.pi / 60
    pwf = (power < 3500) | (power > 9000)
    hdf = ((process - air) < 8.6) & (rpm < 1380)
    assert labels[pwf | hdf].all()
    # Healthy operating points far from every threshold almost never fail (random 0.1 %).
    safe = ~pwf & ~hdf & (wear < 150) & (wear * torque < 8000)
    assert labels[safe].mean() < 0.01


def test_generation_is_reproducible_and_drift_moves_one_feature() -> None:
    a, _ = generate(PLANTS["eu-west"], 100, seed=1)
    b, _ = generate(PLANTS["eu-west"], 100, seed=1)
    np.testing.assert_array_equal(a, b)
    drifted = sensor_drift(a, "air_temperature_k", 3.0)
    changed = np.flatnonzero(np.any(drifted != a, axis=0))
    assert changed.tolist() == [FEATURES.index("air_temperature_k")]
