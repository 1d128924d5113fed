"""``created_at`` parsing for delivery latency: the sliced fast path agrees with ``strptime`` everywhere."""

from __future__ import annotations

import calendar
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.syncstats import parse_rfc3339, source_times


def by_strptime(text: object) -> float | None:
    """The definition: ``strptime`` of the whole seconds plus the decimal fraction."""
    if not isinstance(text, str) or not text.endswith("Z") or len(text) < 20:
        return None
    try:
        whole, _, fraction = text[:-1].partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


SERVED_LIKE = st.builds(
    lambda year, month, day, hour, minute, second, fraction: (
        f"{year:04d}-{month}-{day}T{hour}:{minute}:{second}{fraction}Z"
    ),
    st.integers(1, 9999),
    two(0, 13),
    two(0, 32),
    two(0, 25),
    two(0, 61),
    two(0, 62),
    st.sampled_from(["", "."]) | st.integers(0, 10**9).map(lambda n: f".{n}") | st.text("0123456789x", max_size=4),
)


@settings(max_examples=800, deadline=None)
@given(SERVED_LIKE | st.text(max_size=30) | st.none() | st.integers())
def test_parse_rfc3339_agrees_with_strptime(text: object) -> None:
    assert parse_rfc3339(text) == by_strptime(text)


def test_served_times_parse_to_the_microsecond() -> None:
    assert parse_rfc3339("2026-11-21T02:23:45.807252Z") == calendar.timegm((2026, 11, 21, 2, 23, 45)) + 0.807252
    assert parse_rfc3339("2026-02-29T00:00:00.000000Z") is None  # not a leap year


def test_source_times_skips_what_is_not_a_time_or_has_no_id() -> None:
    records = [
        {"id": "a", "created_at": "1970-01-01T00:00:01.000000Z"},
        {"id": "b", "created_at": "1970-01-01T00:00:01.000000Z"},
        {"id": "c", "created_at": {"not": "hashable"}},
        {"id": 5, "created_at": "1970-01-01T00:00:02.000000Z"},
        {"id": "d", "created_at": "yesterday"},
        {"id": "e"},
    ]
    assert source_times(records) == {"a": 1.0, "b": 1.0}
