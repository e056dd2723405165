"""``modelfleet fl init|start|status|ls|abort|simulate``: federated learning."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    console,
    jsonable,
    print_json,
    say,
    styled,
    table,
    warn,
    when,
)
from modelfleet.errors import InvalidInput
from modelfleet.yamlfile import load_yaml_file

if TYPE_CHECKING:
    from modelfleet.federation.rounds import ClipSetting

app = typer.Typer(
    help="Federated learning: sites train on their own data, the hub aggregates.",
    no_args_is_help=True,
)

FINISHED = ("completed", "failed", "aborted")

#: ``--lr``: the bounds a job's trainer takes (0 < lr <= 100).
LrOpt = typer.Option(help="Local learning rate, 0 < LR <= 100.", min=0, max=100)


def check_lr(lr: float | None) -> None:
    """Click's range is closed; a learning rate of 0 trains nothing, so 0 is refused too."""
    if lr is not None and lr <= 0:
        raise typer.BadParameter(f"{lr:g} is not above 0 (0 < LR <= 100)", param_hint="'--lr'")


def _params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"invalid --param {item!r}: expected key=value")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    family: Annotated[str, typer.Option(help="softmax, logistic or mlp.")] = "softmax",
    features: Annotated[int, typer.Option(help="Input width.", min=1)] = 1,
    classes: Annotated[int, typer.Option(help="Number of classes.", min=2)] = 2,
    hidden: Annotated[str, typer.Option(help="MLP hidden sizes, e.g. 64,32.")] = "",
    activation: Annotated[str, typer.Option(help="relu, tanh or sigmoid.")] = "relu",
    seed: Annotated[int, typer.Option(help="Initialisation seed.", min=0)] = 0,
    alias: Annotated[str | None, typer.Option(help="Alias for the new version.")] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Register an untrained spec-built model: the starting point of federated jobs.

    \b
    Examples:
      modelfleet fl init digits --features 64 --classes 10 --alias base
    """
    import onnx

    from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights

    spec = ModelSpec.parse(
        {
            "family": family,
            "features": features,
            "classes": classes,
            "hidden": _hidden(hidden),
            "activation": activation,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(build_onnx(spec, init_weights(spec, seed)), str(path))
        with client(hub, token) as hc:
            version = hc.push(path, name, alias=alias, framework="modelfleet-fl")
    say(f"{version.model}:{version.version} {spec.family} ({spec.size()} params)")


@app.command()
def start(
    model: Annotated[str | None, typer.Option(help="NAME, NAME:V or NAME@ALIAS.")] = None,
    sites: Annotated[str, typer.Option(help="Site selector, e.g. 'region=eu-west'.")] = "",
    data: Annotated[str | None, typer.Option(help="Data set name in the sites' config.")] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Number of rounds.", min=1, max=100_000)
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="fedavg, fedprox, fedadam, fedyogi, median, trimmed_mean, krum, multikrum."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="K=V", help="Strategy parameter k=v (repeatable)."),
    ] = None,
    min_sites: Annotated[int | None, typer.Option(help="Fewest updates per round.", min=1)] = None,
    local_epochs: Annotated[
        int | None, typer.Option(help="Local epochs per round.", min=1, max=1000)
    ] = None,
    lr: Annotated[float | None, LrOpt] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Local batch size.", min=1, max=1_000_000)
    ] = None,
    round_timeout: Annotated[
        float | None,
        typer.Option(help="Round deadline, seconds (above 0).", min=0, max=7 * 86400),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias for the result, e.g. candidate.")] = None,
    personalize_epochs: Annotated[
        int | None,
        typer.Option(
            help="After the last round each site fine-tunes the result this many epochs on "
            "its own data; each is registered as that site's variant (deploy: modelfleet pin).",
            min=1,
            max=1000,
        ),
    ] = None,
    clip_norm: Annotated[
        str | None,
        typer.Option(
            help="L2 bound on each site's delta: auto (default: 2x the round's median "
            "norm), a number, or off.",
        ),
    ] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Idempotency: a job id.")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="Job YAML file.")] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a federated job (flags override the values of -f job.yaml).

    The hub warns at once when no site is eligible yet (none matches, consents, or is
    online), rather than letting the first round wait in silence.

    \b
    Examples:
      modelfleet fl start --model digits@base --data digits --rounds 5 --sites 'tier=edge'
      modelfleet fl start -f job.yaml --rounds 10
    """
    check_lr(lr)
    body: dict[str, Any] = {}
    if file is not None:
        body.update(load_yaml_file(file, "job file"))
    flags = {
        "id": job_id,
        "model": model,
        "sites": sites or None,
        "data": data,
        "rounds": rounds,
        "strategy": strategy,
        "min_sites": min_sites,
        "local_epochs": local_epochs,
        "lr": lr,
        "batch_size": batch_size,
        "round_timeout_s": round_timeout,
        "alias": alias,
        "personalize_epochs": personalize_epochs,
        "clip_norm": _clip(clip_norm, "--clip-norm") if clip_norm is not None else None,
    }
    body.update({k: v for k, v in flags.items() if v is not None})
    if param:
        body["strategy_params"] = {**body.get("strategy_params", {}), **_params(param)}
    for required in ("model", "data", "rounds"):
        if required not in body:
            raise InvalidInput(f"--{required} is required (or give it in -f job.yaml)")
    with client(hub, token) as hc:
        job = hc.start_federated_job(body)
    if job.state == "running" and (job.message or "").startswith("waiting for sites"):
        # The hub opened no round: say who is left out and why now, not after the wait.
        wait = job.config.get("wait_for_sites_s", 600.0)
        warn(f"{job.message}; the job fails if no round opens within {wait:g} s")
    if json_out:
        print_json(job)
        return
    say(
        f"job {job.id} {job.state}: {job.model}:{job.base_version}, "
        f"{job.strategy}, {job.rounds} rounds, sites {job.selector}"
    )
    say(f"follow it: modelfleet fl status {job.id} --watch")


def _render(job: dict[str, Any]) -> None:
    say(
        styled(
            (str(job["id"]), "bold"),
            f" {job['state']}  round {job['round']}/{job['rounds']}  "
            f"{job['strategy']}  model {job['model']}:{job['base_version']}  data {job['data']}"
            + (f"  -> version {job['result_version']}" if job.get("result_version") else ""),
        )
    )
    if job.get("message"):
        say(f"  {job['message']}")
    result_model = job.get("config", {}).get("result_model") or job["model"]
    for site, version in sorted(job.get("variants", {}).items()):
        ref = f"{result_model}:{version}"
        say(f"  variant for {site}: {ref}  (deploy: modelfleet pin {site} {ref})")
    left_out = [
        (name, info["status"], info["reason"])
        for name, info in sorted(job.get("sites", {}).items())
        if info.get("status") != "eligible"
    ]
    if left_out:
        table(
            "sites left out", [Col("SITE", keep=True), "STATUS", Col("REASON", free=True)], left_out
        )
    rows = []
    for r in job.get("round_details", []):
        metrics = r["metrics"]
        parts = [
            f"{u['site']}:{u['num_examples']}"
            + (f" loss={u['metrics']['train_loss']:.3f}" if "train_loss" in u["metrics"] else "")
            + (
                f" acc={u['metrics']['eval_accuracy']:.3f}"
                if "eval_accuracy" in u["metrics"]
                else ""
            )
            if u["kind"] == "update"
            else f"{u['site']}: refused ({u['reason']})"
            for u in r["updates"]
        ]
        parts += [f"{s}: no answer" for s in r["stragglers"]]
        agg = " ".join(
            f"{k}={metrics[k]:.4g}"
            for k in ("train_loss", "eval_loss", "eval_accuracy")
            if k in metrics
        )
        personal = bool(job.get("config", {}).get("personalize_epochs"))
        rows.append(
            (
                f"{r['round']} personalize"
                if personal and r["round"] > job["rounds"]
                else r["round"],
                f"{r['state']}" + (f" #{r['attempt']}" if r["attempt"] > 1 else ""),
                "\n".join(parts) or "-",
                agg or r.get("reason") or "-",
                f"{r['duration_s']:.2f}s" if r["duration_s"] is not None else "-",
            )
        )
    if rows:
        table(
            None,
            [
                "ROUND",
                "STATE",
                Col("SITES (examples, loss, local acc)", free=True),
                "AGGREGATE",
                "TIME",
            ],
            rows,
            cut_hint="fl status ID --json prints every update whole",
        )


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the job ends.")] = False,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A job per round: participating sites, example counts, losses, metrics, duration.

    \b
    Examples:
      modelfleet fl status fl-1a2b3c4d --watch
    """
    with client(hub, token) as hc:
        while True:
            job = hc.get_federated_job(job_id)
            if json_out and not watch:
                print_json(job)
                return
            if not watch or job.state in FINISHED:
                break
            console.clear()
            _render(jsonable(job))
            time.sleep(1.0)
    if json_out:
        print_json(job)
    else:
        _render(jsonable(job))


@app.command("ls")
def list_jobs(hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every federated job.

    \b
    Examples:
      modelfleet fl ls
    """
    with client(hub, token) as hc:
        jobs = hc.list_federated_jobs()
    if json_out:
        print_json(jobs)
        return
    rows = [
        (
            j.id,
            f"{j.model}:{j.base_version}",
            j.state,
            f"{j.round}/{j.rounds}",
            j.strategy,
            j.selector,
            j.result_version,
            when(j.created_at),
        )
        for j in jobs
    ]
    table(
        None,
        [
            Col("JOB", keep=True), "MODEL", "STATE", "ROUND", "STRATEGY", Col("SITES", free=True),
            "RESULT", "CREATED",
        ],
        rows,
        empty="no federated jobs yet: modelfleet fl start --model NAME@ALIAS --data SET --rounds N",
    )  # fmt: skip


@app.command()
def abort(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    reason: Annotated[str, typer.Option(help="Recorded with the job.")] = "aborted by an operator",
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Abort a running job; updates still in flight are refused.

    \b
    Examples:
      modelfleet fl abort fl-1a2b3c4d --reason 'wrong data set'
    """
    with client(hub, token) as hc:
        job = hc.abort_federated_job(job_id, reason)
    say(f"job {job.id} {job.state}")


@app.command()
def simulate(
    sites_n: Annotated[int, typer.Option("--sites", help="Virtual sites.", min=1, max=700)] = 10,
    rounds: Annotated[int, typer.Option(help="Rounds.", min=1, max=100_000)] = 30,
    strategy: Annotated[str, typer.Option(help="Aggregation strategy.")] = "fedavg",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="K=V", help="Strategy parameter k=v (repeatable)."),
    ] = None,
    iid: Annotated[bool, typer.Option("--iid", help="IID split instead of label shards.")] = False,
    shards_per_site: Annotated[
        int, typer.Option(help="Label shards per site (non-IID).", min=1, max=100)
    ] = 2,
    poisoned: Annotated[
        int, typer.Option(help="Sites sending poisoned updates (at most --sites).", min=0)
    ] = 0,
    poison: Annotated[str, typer.Option(help="sign_flip or scale.")] = "sign_flip",
    poison_factor: Annotated[float, typer.Option(help="Poison magnitude.", min=0, max=1e6)] = 4.0,
    local_epochs: Annotated[int, typer.Option(help="Local epochs.", min=1, max=1000)] = 1,
    lr: Annotated[float, LrOpt] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Local batch size.", min=1, max=1_000_000)] = 32,
    seed: Annotated[int, typer.Option(help="Split seed.", min=0)] = 0,
    clip: Annotated[
        str, typer.Option(help="L2 bound on each delta: auto, a number, or off (as a job).")
    ] = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Run a job with virtual sites in one process on scikit-learn's digits (softmax).

    \b
    Examples:
      modelfleet fl simulate --sites 10 --rounds 20 --strategy krum \\
          --param byzantine=2 --poisoned 2
    """
    from modelfleet.federation.simulation import Poison, digits_sites, simulate
    from modelfleet.federation.specs import init_weights
    from modelfleet.federation.strategies import make_strategy
    from modelfleet.federation.training import TrainConfig

    if poison not in ("sign_flip", "scale"):
        raise typer.BadParameter("must be sign_flip or scale", param_hint="'--poison'")
    if poisoned > sites_n:
        raise typer.BadParameter(
            f"{poisoned} is more than the {sites_n} sites (--sites)", param_hint="'--poisoned'"
        )
    check_lr(lr)
    aggregation = make_strategy(strategy, _params(param))
    if sites_n < aggregation.min_updates():
        raise typer.BadParameter(
            f"strategy {strategy} needs at least {aggregation.min_updates()} sites per round "
            f"({', '.join(f'{k}={v}' for k, v in aggregation.params().items())}), "
            f"got {sites_n}",
            param_hint="'--sites'",
        )
    spec, virtual, test = digits_sites(
        sites_n,
        non_iid=not iid,
        shards_per_site=shards_per_site,
        seed=seed,
        poisoned=poisoned,
        poison=Poison("sign_flip" if poison == "sign_flip" else "scale", poison_factor),
    )
    result = simulate(
        spec,
        init_weights(spec),
        virtual,
        aggregation,
        rounds=rounds,
        train=TrainConfig(local_epochs=local_epochs, lr=lr, batch_size=batch_size),
        test=test,
        clip_norm=_clip(clip),
    )
    if json_out:
        print_json(result.to_dict())
        return
    table(
        f"{strategy}, {sites_n} virtual sites ({'IID' if iid else 'non-IID'}), {poisoned} poisoned",
        ["ROUND", "TEST ACC", "TEST LOSS", "TRAIN LOSS", "TIME"],
        [
            (
                r.round,
                f"{r.test['accuracy']:.4f}",
                f"{r.test['loss']:.4f}",
                f"{r.metrics.get('train_loss', float('nan')):.4f}",
                f"{r.duration_s * 1000:.1f} ms",
            )
            for r in result.rounds
        ],
    )


def _hidden(text: str) -> list[int]:
    """``--hidden 64,32``: the MLP's hidden layer sizes."""
    try:
        return [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise InvalidInput(
            f"--hidden {text!r}: expected layer sizes separated by commas, e.g. 64,32"
        ) from None


def _clip(text: str, option: str = "--clip") -> ClipSetting:
    """``--clip``/``--clip-norm``: auto, off or a positive number."""
    if text in ("auto", "off"):
        return "auto" if text == "auto" else "off"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise InvalidInput(f"{option} must be auto, off or a positive number, got {text!r}")
    return value
