"""What a federated job is: its configuration, who may take part, and the consent rules.

Kept apart from the coordinator's state machine so the CLI, the API and the site agent
share one definition of a job file and of a site's consent declaration.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelfleet.errors import InvalidInput
from modelfleet.federation.strategies import make_strategy
from modelfleet.federation.training import TrainConfig
from modelfleet.refs import check_alias, check_name, parse_ref

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class JobConfig(BaseModel):
    """A federated training campaign, as operators write it (``fl start`` or ``-f job.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        description="Optional job id; submitting the same id again returns the existing job, "
        "so a retried `fl start` never starts a second campaign.",
    )
    model: str = Field(description="NAME, NAME:V or NAME@ALIAS of a spec-built model version.")
    sites: str = Field(default="", description="Label selector; empty means every site.")
    data: str = Field(description="Name of the data set each site trains on (site config).")
    rounds: int = Field(ge=1, le=100_000)
    strategy: str = "fedavg"
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    min_sites: int = Field(default=1, ge=1, description="Fewest updates a round may close with.")
    local_epochs: int = Field(default=1, ge=1, le=1000)
    lr: float = Field(default=0.1, gt=0, le=100)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    l2: float = Field(default=0.0, ge=0, le=100)
    trainer: str = Field(default="builtin", description="Trainer name registered at the sites.")
    round_timeout_s: float = Field(
        default=120.0, gt=0, le=7 * 86400, description="A round closes at this deadline."
    )
    max_round_attempts: int = Field(default=3, ge=1, le=100)
    wait_for_sites_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a round may wait for min-sites eligible online sites.",
    )
    clip_norm: Annotated[float, Field(gt=0, le=1e12)] | Literal["auto", "off"] = Field(
        default="auto",
        description="L2 bound on each site's delta: a number, 'auto' (2x the round's median "
        "delta norm, so no one site can outweigh the rest) or 'off'.",
    )
    max_examples_per_site: int = Field(
        default=1_000_000,
        ge=1,
        le=1 << 40,
        description="An update counts at most this many examples (its weight in the "
        "mean), and never more than the site's own config declares (federation.max_examples).",
    )
    result: Literal["final", "best"] = Field(
        default="final", description="Register the final global model or the best round's."
    )
    best_metric: str = Field(default="eval_accuracy", description="For result=best; higher wins.")
    alias: str | None = Field(default=None, description="Alias to set on the result.")
    result_model: str | None = Field(default=None, description="Register under this name.")
    personalize_epochs: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="After the last round, every site fine-tunes the final global model "
        "this many epochs on its own data; each result is registered as that site's "
        "variant (tag fl.site), for a per-site override (`modelfleet pin`) to deploy.",
    )

    @field_validator("clip_norm", mode="before")
    @classmethod
    def _clip(cls, value: object) -> object:
        # Jobs stored before clipping became the default say null: they ran unclipped.
        return "off" if value is None else value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not JOB_ID.fullmatch(value):
            raise ValueError("use 1-64 letters, digits, '.', '_' or '-'")
        return value

    @classmethod
    def parse(cls, data: object) -> JobConfig:
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            raise InvalidInput(f"invalid federated job: {where}: {err.get('msg')}") from exc
        config.check()
        return config

    def check(self) -> None:
        """Cross-field checks that need the strategy and name rules."""
        parse_ref(self.model)
        check_name(self.data, "data set name")
        check_name(self.trainer, "trainer name")
        if self.alias is not None:
            check_alias(self.alias)
        if self.result_model is not None:
            check_name(self.result_model, "model name")
        strategy = make_strategy(self.strategy, self.strategy_params)
        if self.min_sites < strategy.min_updates():
            raise InvalidInput(
                f"strategy {strategy.name} with {strategy.params()} needs at least "
                f"{strategy.min_updates()} updates per round; raise --min-sites"
            )

    def total_rounds(self) -> int:
        """Training rounds plus the personalization round, if asked for."""
        return self.rounds + (1 if self.personalize_epochs else 0)

    def personalizes(self, number: int) -> bool:
        """Whether round ``number`` is the personalization round (after the last one)."""
        return self.personalize_epochs is not None and number > self.rounds

    def round_train_config(self, number: int) -> TrainConfig:
        """What sites train with in round ``number``: plain fine-tuning (no proximal
        term or other strategy pull towards the global model) when personalizing."""
        if self.personalizes(number) and self.personalize_epochs is not None:
            return TrainConfig(
                local_epochs=self.personalize_epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                l2=self.l2,
            )
        return self.train_config()

    def train_config(self) -> TrainConfig:
        site_params = make_strategy(self.strategy, self.strategy_params).site_params()
        return TrainConfig(
            local_epochs=self.local_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            l2=self.l2,
            **site_params,
        )


class Consent(BaseModel):
    """What a site declares to the hub about federated learning (from its own config).

    The hub uses it only to avoid sending tasks the site would refuse and to show operators
    why a site is left out; the site checks every task against its config again anyway.
    """

    model_config = ConfigDict(extra="ignore")

    participate: bool = False
    reason: str = ""
    models: list[str] = Field(default_factory=lambda: ["*"])
    datasets: list[str] = Field(default_factory=list)
    trainers: list[str] = Field(default_factory=lambda: ["builtin"])
    max_rounds_per_day: int | None = None
    rounds_today: int = 0
    #: The most examples this site's updates may count for (its config); None: the job's cap.
    max_examples: int | None = Field(default=None, ge=1, le=1 << 40)

    def example_cap(self, job: JobConfig) -> int:
        """How many examples one update from this site counts for, at most, in ``job``."""
        if self.max_examples is None:
            return job.max_examples_per_site
        return min(self.max_examples, job.max_examples_per_site)


def refusal(consent: Consent | None, job: JobConfig, model: str) -> str | None:
    """Why a site with this declaration cannot take part in ``job``; None when it can."""
    if consent is None:
        return "the site has not declared federated-learning consent (no federation config)"
    if not consent.participate:
        return "site config refuses federated jobs" + (
            f": {consent.reason}" if consent.reason else ""
        )
    if not any(fnmatch.fnmatchcase(model, pattern) for pattern in consent.models):
        return f"site config does not allow training model {model!r} (allows {consent.models})"
    if job.data not in consent.datasets:
        return f"site has no data set {job.data!r} (has {consent.datasets or 'none'})"
    if job.trainer not in consent.trainers:
        return f"trainer {job.trainer!r} is not registered at the site (has {consent.trainers})"
    limit = consent.max_rounds_per_day
    if limit is not None and consent.rounds_today >= limit:
        return f"site reached its limit of {limit} federated rounds per day"
    return None
