"""Metrics (pure functions over arrays) and, later, the benchmark harness."""

from .metrics import (
    average_drop,
    bootstrap_ci,
    increase_in_confidence,
    loc_delta,
    win_rate,
)

__all__ = ["average_drop", "bootstrap_ci", "increase_in_confidence", "loc_delta", "win_rate"]
