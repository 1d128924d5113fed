"""The one duration parser and the one percentile (``spl.core.units``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spl.core.units import DurationError, parse_duration, percentile


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5", 1.5), ("500ms", 0.5), ("30s", 30.0), ("30 sec", 30.0), ("5m", 300.0), ("2min", 120.0), ("1h", 3600.0)],
)
def test_durations_people_type(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1w", "-5s", "5 s s", "1e3", "nan"])
def test_not_a_duration_names_the_option(text: str) -> None:
    with pytest.raises(DurationError, match="--poll-interval"):
        parse_duration(text, "--poll-interval")


def test_positive_refuses_zero() -> None:
    assert parse_duration("0") == 0.0
    with pytest.raises(DurationError, match="longer than zero"):
        parse_duration("0s", "--duration", positive=True)


def test_nearest_rank_percentile() -> None:
    assert percentile([1, 2, 3, 4, 5, 6], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1), st.floats(0, 100))
def test_percentile_is_a_sample_with_q_percent_at_or_below(samples: list[float], q: float) -> None:
    value = percentile(samples, q)
    assert value in samples
    at_or_below = sum(1 for s in samples if s <= value)
    assert at_or_below >= q / 100 * len(samples) - 1e-9
    assert sum(1 for s in samples if s < value) < max(1, math.ceil(q / 100 * len(samples)))
