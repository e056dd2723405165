"""Flower's side of bench/federated.py: the same partition, model and local trainer in
Flower's simulation engine (``flwr[simulation]``, Ray backend), FedAvg, centralised test
accuracy per round. Run by bench/federated.py as a subprocess (Flower pins versions of
FastAPI and friends that differ from modelfleet's, so it may live in its own venv);
prints one JSON document on the last line of stdout.

    python bench/federated_flower.py --rounds 30 --sites 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import itertools

from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from modelfleet.federation.simulation import digits_sites
from modelfleet.federation.specs import evaluate, init_weights
from modelfleet.federation.training import TrainConfig, sgd_fit, task_seed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--job", default="bench-fedavg", help="Seeds local shuffles as ours.")
    parser.add_argument(
        "--client-cpus",
        type=float,
        default=1.0,
        help="Ray CPUs per virtual client (how many clients Flower runs at once).",
    )
    parser.add_argument(
        "--aggregation-out",
        type=Path,
        help="Instead of the job: time Flower's aggregate on bench/federated.py's synthetic "
        "updates and save its result here (.npy) for the caller to compare.",
    )
    args = parser.parse_args()
    if args.aggregation_out is not None:
        time_aggregation(args.aggregation_out)
        return
    logging.getLogger("flwr").setLevel(logging.WARNING)

    spec, sites, (x_test, y_test) = digits_sites(args.sites, non_iid=True)
    names = spec.names()
    train = TrainConfig(local_epochs=args.local_epochs, lr=args.lr, batch_size=args.batch_size)
    history: list[dict[str, float]] = []
    marks: list[float] = []

    class Client(NumPyClient):
        def __init__(self, index: int) -> None:
            self.site = sites[index]

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            weights = dict(zip(names, parameters, strict=True))
            seed = task_seed(args.job, int(config.get("server_round", 0)), self.site.name)
            fit = sgd_fit(spec, weights, self.site.x, self.site.y, train, seed=seed)
            return [fit.weights[n] for n in names], fit.num_examples, fit.metrics

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return Client(int(context.node_config["partition-id"])).to_client()

    def evaluate_fn(server_round, parameters, config):  # type: ignore[no-untyped-def]
        marks.append(time.perf_counter())
        metrics = evaluate(spec, dict(zip(names, parameters, strict=True)), x_test, y_test)
        if server_round > 0:
            history.append({"round": server_round, **metrics})
        return metrics["loss"], {"accuracy": metrics["accuracy"]}

    initial = init_weights(spec)

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=args.sites,
            min_available_clients=args.sites,
            initial_parameters=ndarrays_to_parameters([initial[n] for n in names]),
            evaluate_fn=evaluate_fn,
            on_fit_config_fn=lambda r: {"server_round": r},
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    started = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=args.sites,
        backend_config={"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0}},
    )
    total = time.perf_counter() - started
    rounds = [b - a for a, b in itertools.pairwise(marks)]
    print(json.dumps({"total_s": total, "round_s": rounds, "history": history}))


def time_aggregation(out: Path, repeats: int = 3) -> None:
    import numpy as np
    from bench_updates import synthetic_updates
    from flwr.server.strategy.aggregate import aggregate

    deltas, counts = synthetic_updates()
    results = [([d], c) for d, c in zip(deltas, counts, strict=True)]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        aggregated = aggregate(results)
        times.append(time.perf_counter() - started)
    np.save(out, aggregated[0])
    print(json.dumps({"flower_s": min(times)}))


if __name__ == "__main__":
    main()
