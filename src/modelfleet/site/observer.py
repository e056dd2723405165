"""The hook between the inference hot path and telemetry.

The server calls :meth:`InferenceObserver.observe` once per answered request (after the
response is built, never raising into the request). Telemetry implements it; the default
does nothing, so serving works without monitoring and tests can swap in their own.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class InferenceObserver(Protocol):
    def observe(
        self,
        *,
        model: str,
        version: int,
        latency_s: float,
        outcome: str,  # "ok" | "bad_request" | "error" | "degraded" ...
        batch_size: int,
        inputs: dict[str, np.ndarray[Any, Any]] | None,
        outputs: dict[str, np.ndarray[Any, Any]] | None,
    ) -> None: ...


class NullObserver:
    """Observes nothing."""

    def observe(
        self,
        *,
        model: str,
        version: int,
        latency_s: float,
        outcome: str,
        batch_size: int,
        inputs: dict[str, np.ndarray[Any, Any]] | None,
        outputs: dict[str, np.ndarray[Any, Any]] | None,
    ) -> None:
        return None
