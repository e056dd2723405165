"""Strategies behind one interface, and robustness to poisoned sites (simulation)."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.errors import InvalidInput
from modelfleet.federation.rounds import ClipSetting, aggregate_round, default_stages
from modelfleet.federation.simulation import Poison, digits_sites, simulate
from modelfleet.federation.specs import init_weights
from modelfleet.federation.strategies import STRATEGIES, Update, make_strategy
from modelfleet.federation.training import TrainConfig


def _updates(rng: np.random.Generator, n: int = 7, size: int = 50) -> list[Update]:
    return [
        Update(f"s{i}", rng.normal(size=size).astype(np.float32), int(rng.integers(1, 100)))
        for i in range(n)
    ]


def test_fedavg_streams_the_example_weighted_mean() -> None:
    updates = _updates(np.random.default_rng(0))
    weights = np.zeros(50, np.float32)
    out = aggregate_round(make_strategy("fedavg"), weights, {}, iter(updates), round_number=1)
    counts = np.array([u.num_examples for u in updates], np.float64)
    expected = (np.stack([u.delta for u in updates]) * counts[:, None]).sum(0) / counts.sum()
    np.testing.assert_allclose(out.weights, expected, rtol=1e-6, atol=1e-6)
    assert out.metrics["num_examples"] == counts.sum()
    assert make_strategy("fedavg").streaming
    assert not make_strategy("median").streaming


def test_robust_aggregators_ignore_outliers() -> None:
    rng = np.random.default_rng(1)
    honest = [
        Update(f"h{i}", (1 + 0.01 * rng.normal(size=20)).astype(np.float32), 10) for i in range(8)
    ]
    evil = [Update(f"e{i}", np.full(20, -100.0, np.float32), 10) for i in range(2)]
    for name, params in [
        ("median", {}),
        ("trimmed_mean", {"beta": 0.2}),
        ("krum", {"byzantine": 2}),
        ("multikrum", {"byzantine": 2}),
    ]:
        out = aggregate_round(
            make_strategy(name, params), np.zeros(20, np.float32), {}, honest + evil, round_number=1
        )
        assert np.allclose(out.weights, 1.0, atol=0.05), name
    mean = aggregate_round(
        make_strategy("fedavg"), np.zeros(20, np.float32), {}, honest + evil, round_number=1
    )
    assert mean.weights.mean() < -15


def test_server_optimizers_keep_state_between_rounds() -> None:
    rng = np.random.default_rng(2)
    for name in ("fedadam", "fedyogi"):
        strategy = make_strategy(name, {"server_lr": 0.1})
        weights = np.zeros(50, np.float32)
        out = aggregate_round(strategy, weights, {}, _updates(rng), round_number=1)
        assert set(out.state) == {"m", "v"}
        again = aggregate_round(strategy, out.weights, out.state, _updates(rng), round_number=2)
        assert not np.allclose(again.state["m"], out.state["m"])


def test_fedprox_sends_mu_to_sites_and_nonfinite_updates_are_dropped() -> None:
    assert make_strategy("fedprox", {"proximal_mu": 0.5}).site_params() == {"proximal_mu": 0.5}
    bad = Update("nan", np.full(50, np.nan, np.float32), 10)
    good = _updates(np.random.default_rng(3), n=2)
    out = aggregate_round(
        make_strategy("fedavg"),
        np.zeros(50, np.float32),
        {},
        [bad, *good],
        round_number=1,
        stages=default_stages(clip_norm=1.0),
    )
    assert out.used == ["s0", "s1"]
    assert "NaN" in out.dropped["nan"]
    assert np.linalg.norm(out.weights) <= 1.0 + 1e-5


@pytest.mark.parametrize(
    ("name", "params"),
    [("nope", {}), ("fedprox", {"proximal_mu": -1}), ("fedavg", {"x": 1}), ("krum", {"keep": 0})],
)
def test_bad_strategy_choices_are_refused(name: str, params: dict) -> None:
    with pytest.raises(InvalidInput):
        make_strategy(name, params)


def test_every_strategy_is_registered() -> None:
    assert set(STRATEGIES) == {
        "fedavg", "fedprox", "fedadam", "fedyogi", "median", "trimmed_mean", "krum", "multikrum"
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["sign_flip", "scale"])
def test_two_poisoned_sites_of_ten(mode: str) -> None:
    """FedAvg degrades; median, trimmed mean and (Multi-)Krum stay near the clean run."""
    train = TrainConfig(local_epochs=2, lr=0.5, batch_size=32)
    poison = Poison(mode, 4.0 if mode == "sign_flip" else 10.0)  # type: ignore[arg-type]

    def accuracy(strategy: str, poisoned: int, clip: ClipSetting = "off") -> float:
        spec, sites, test = digits_sites(10, non_iid=False, poisoned=poisoned, poison=poison)
        params = {"byzantine": 2} if "krum" in strategy else {}
        result = simulate(
            spec, init_weights(spec), sites, make_strategy(strategy, params),
            rounds=15, train=train, test=test, clip_norm=clip,
        )  # fmt: skip
        return result.rounds[-1].test["accuracy"]

    clean = accuracy("fedavg", 0)
    figures = {s: accuracy(s, 2) for s in ("fedavg", "median", "trimmed_mean", "krum", "multikrum")}
    clipped = accuracy("fedavg", 2, clip="auto")
    print(f"{mode}: clean fedavg {clean:.3f}, with 2/10 poisoned {figures}, clipped {clipped:.3f}")
    assert figures["fedavg"] < clean - 0.1
    # The default clipping (2x the round's median norm) takes most of the damage away.
    assert clipped > figures["fedavg"] + 0.03
    for robust in ("median", "trimmed_mean", "krum", "multikrum"):
        assert figures[robust] > clean - 0.04, robust
