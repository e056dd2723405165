"""Hypothesis settings every fuzz suite shares: derandomized in CI (a failure reproduces from
the same commit), deeper and random on demand::

    MODELFLEET_FUZZ_EXAMPLES=2000 MODELFLEET_FUZZ_RANDOM=1 pytest tests/.../test_*_fuzz.py
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings


def fuzz_settings(default_examples: int, **overrides: Any) -> settings:
    """``default_examples`` unless ``MODELFLEET_FUZZ_EXAMPLES`` says otherwise; no example
    database (CI starts clean each time), no deadline (real servers answer in their time)."""
    options: dict[str, Any] = {
        "max_examples": int(os.environ.get("MODELFLEET_FUZZ_EXAMPLES", str(default_examples))),
        "deadline": None,
        "derandomize": os.environ.get("MODELFLEET_FUZZ_RANDOM") != "1",
        "database": None,
        "suppress_health_check": list(HealthCheck),
    }
    options.update(overrides)
    return settings(**options)
