"""Numbers people type and numbers we report: one duration parser and one percentile for the whole tree.

Before this module there were two duration regexes (the fleet CLI and the soak) and three percentile
functions that disagreed (``/v1/sync/health`` said 4.0 where the soak said 3.0 for the p50 of 1..6).
Everything that reads a duration or reports a percentile goes through here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = ["DurationError", "parse_duration", "percentile"]

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min|h|d)?\s*")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class DurationError(ValueError):
    """Text that is not a duration; the message names the option and shows the accepted forms."""


def parse_duration(text: str, option: str = "duration", *, positive: bool = False) -> float:
    """``1.5`` / ``500ms`` / ``30s`` / ``5m`` / ``1h`` (also ``sec`` and ``min``) → seconds.

    Args:
        text: what the user typed.
        option: the option's name, for the error message (``--poll-interval``).
        positive: refuse zero.

    Raises:
        DurationError: not a duration, or zero when ``positive``.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise DurationError(f"{option} {text!r} is not a duration; use seconds (1.5) or a unit: 500ms, 30s, 5m, 1h")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if positive and seconds <= 0:
        raise DurationError(f"{option} must be longer than zero")
    return seconds


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): the smallest sample with at least q% of samples at or below it.

    NaN when there are no samples. The p50 of ``1..6`` is 3, the p99 of 100 samples is the 99th smallest.
    """
    if not samples:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
