"""Latency summaries for the benchmarks: p50 / p99 / max in milliseconds.

Percentiles are :func:`spl.core.units.percentile` (nearest rank), the one the soak's CSV and
``/v1/sync/health`` report, so a benchmark's p50 and theirs mean the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spl.core.units import percentile

__all__ = ["summary_ms"]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of ``seconds``, as milliseconds rounded to 0.01; NaN each when there are none."""
    ms = [value * 1000 for value in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else math.nan,
    }
