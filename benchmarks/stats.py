"""Summary statistics for repeated measurements, in one place so every benchmark
reports them alike: min/median/max over repeats, and percentiles of latencies."""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def _sorted(values: Iterable[float]) -> list[float]:
    out = sorted(float(v) for v in values)
    if not out:
        raise ValueError("no values")
    if any(math.isnan(v) for v in out):
        raise ValueError("NaN among the values")
    return out


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0..100), interpolating linearly between the two
    nearest ranks (numpy's default, 'linear')."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {p}")
    ordered = _sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def summary(values: Sequence[float]) -> dict[str, float]:
    """{"n", "min", "median", "max"} of repeated measurements."""
    ordered = _sorted(values)
    return {"n": len(ordered), "min": ordered[0], "median": median(ordered),
            "max": ordered[-1]}


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """{"n", "min", "p50", "p95", "p99", "max"}, e.g. of send-to-sync latencies."""
    ordered = _sorted(values)
    return {"n": len(ordered), "min": ordered[0], "p50": percentile(ordered, 50),
            "p95": percentile(ordered, 95), "p99": percentile(ordered, 99),
            "max": ordered[-1]}
