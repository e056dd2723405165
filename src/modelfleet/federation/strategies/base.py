"""The one interface every aggregation strategy implements.

A round's updates are *deltas* (site weights minus the round's global weights) with the
site's example count. A strategy splits its work in two:

* an :class:`Aggregator`, fresh for each round, that folds updates in one at a time —
  streaming strategies keep only running sums, robust ones must hold the round's updates;
* :meth:`Strategy.server_update`, which turns the aggregated delta into the next global
  weights, with optional server state (FedAdam/FedYogi moments) that the coordinator
  persists between rounds so a restarted hub continues exactly where it stopped.

Working on deltas is what lets secure aggregation and differential privacy slot in later:
clipping, noising and mask removal all act on deltas between the site and the aggregator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from modelfleet.errors import InvalidInput

Vector = npt.NDArray[np.float32]
State = dict[str, npt.NDArray[np.float64]]


@dataclass(frozen=True)
class Update:
    """One site's contribution to one round."""

    site: str
    delta: Vector
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class Aggregator(ABC):
    """Folds one round's updates into one delta."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self.examples = 0

    def add(self, update: Update) -> None:
        if update.delta.shape != (self.size,):
            raise InvalidInput(
                f"update from {update.site!r} has {update.delta.size} parameters, "
                f"the model has {self.size}"
            )
        if update.num_examples <= 0:
            raise InvalidInput(f"update from {update.site!r} claims no training examples")
        self.count += 1
        self.examples += update.num_examples
        self._add(update)

    @abstractmethod
    def _add(self, update: Update) -> None: ...

    @abstractmethod
    def result(self) -> npt.NDArray[np.float64]:
        """The aggregated delta; ``InvalidInput`` if no update was added."""

    def _require_some(self) -> None:
        if self.count == 0:
            raise InvalidInput("cannot aggregate a round without updates")


class WeightedMean(Aggregator):
    """Mean weighted by example counts, as running sums: memory is one model, not n.

    Each update is scaled into a float32 buffer and added to a float32 partial sum
    (two passes over memory, no allocation); every ``FLUSH`` updates the partial sum is
    folded into the float64 total, so rounding error stays that of a 16-term float32 sum
    however many sites take part.
    """

    FLUSH = 16

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._sum = np.zeros(size, np.float64)
        self._partial = np.zeros(size, np.float32)
        self._scaled = np.empty(size, np.float32)
        self._pending = 0

    def _add(self, update: Update) -> None:
        # An overflow here (a huge delta times a huge count) becomes infinity, which
        # aggregate_round refuses to store; numpy's warning would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(update.delta, np.float32(update.num_examples), out=self._scaled)
            self._partial += self._scaled
        self._pending += 1
        if self._pending == self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        self._sum += self._partial
        self._partial.fill(0.0)
        self._pending = 0

    def result(self) -> npt.NDArray[np.float64]:
        self._require_some()
        self._flush()
        out: npt.NDArray[np.float64] = self._sum / self.examples
        return out


class Collecting(Aggregator):
    """Robust statistics need every update of the round at once."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.updates: list[Update] = []

    def _add(self, update: Update) -> None:
        self.updates.append(update)

    def stacked(self) -> npt.NDArray[np.float32]:
        self._require_some()
        return np.stack([u.delta for u in self.updates])


class Strategy(ABC):
    """An aggregation algorithm; subclasses register under :attr:`name`."""

    name: ClassVar[str]
    #: True when the aggregator keeps running sums only (memory independent of n).
    streaming: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        if params:
            raise InvalidInput(
                f"strategy {self.name!r} takes no parameter(s) {', '.join(sorted(params))}"
            )

    def params(self) -> dict[str, Any]:
        """The strategy's parameters, recorded with the job and the registered version."""
        return {}

    def site_params(self) -> dict[str, float]:
        """What each site's trainer must know (e.g. FedProx's proximal coefficient)."""
        return {}

    def min_updates(self) -> int:
        """The fewest updates a round needs for this strategy to be meaningful."""
        return 1

    @abstractmethod
    def aggregator(self, size: int) -> Aggregator: ...

    def server_update(
        self,
        weights: Vector,
        delta: npt.NDArray[np.float64],
        state: State,
        round_number: int,
    ) -> tuple[Vector, State]:
        """Next global weights; the default applies the aggregated delta as is."""
        return (weights.astype(np.float64) + delta).astype(np.float32), state


def number(params: dict[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    """A numeric strategy parameter in ``[low, high]``, or ``InvalidInput``."""
    value = params.pop(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"strategy parameter {key!r} must be a number, got {value!r}")
    if not low <= float(value) <= high:
        raise InvalidInput(f"strategy parameter {key!r} must be within [{low}, {high}]")
    return float(value)
