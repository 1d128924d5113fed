"""Delivery latency as fixed-bucket counts: agrees with the exact sorted computation within one bucket's width.

The exact figures are what ``summarise`` computes over a list (nearest-rank percentiles, the soak's definition);
the window (``LatencyWindow``, ``PairStats``) must give the same count, mean, minimum and maximum, and
percentiles in the same fine bucket as the exact ones: under 9.1 % of the value above 0.25 ms, ≤ 0.25 ms below.
"""

from __future__ import annotations

import bisect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.syncstats import (
    EXPORT_BUCKETS_S,
    FINE_BOUNDS_MS,
    LATENCY_BUCKETS_MS,
    LatencyWindow,
    PairStats,
    summarise,
)
from spl.core.units import percentile

RELATIVE_BOUND = 2 ** (1 / 8) - 1  # the widest bucket above 0.25 ms, relative to its lower edge

# Latencies in ms over the range a pair meets: sub-millisecond loopback to day-old catch-up, some clock skew.
LATENCY_MS = st.one_of(
    st.floats(min_value=-50, max_value=1, allow_nan=False),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.floats(min_value=0, max_value=3.6e6, allow_nan=False),
    st.floats(min_value=0, max_value=1e10, allow_nan=False),  # past the last fine bound: the overflow bucket
    st.sampled_from([0.0, 1.0, 5.0, 25.0, 10_000.0, 10_000.000001]),  # on and just past the named bounds
)
SAMPLES = st.lists(LATENCY_MS, min_size=1, max_size=300)


def assert_close(estimate: float, exact: float, samples: list[float]) -> None:
    """``estimate`` (rounded to 0.01 as the answers are) is within the documented bound of ``exact``."""
    assert min(samples) - 0.01 <= estimate <= max(samples) + 0.01
    if exact > FINE_BOUNDS_MS[0]:
        bound = exact * RELATIVE_BOUND if exact <= FINE_BOUNDS_MS[-1] else max(samples) - FINE_BOUNDS_MS[-1]
    else:
        bound = FINE_BOUNDS_MS[0] - min(min(samples), 0.0)
    assert abs(estimate - exact) <= bound + 0.01, (estimate, exact, bound)


def wire_histogram_exact(samples: list[float]) -> dict[str, int]:
    """The JSON histogram as the answers define it: each value in the first bucket whose bound it does not exceed."""
    histogram = {f"le_{bound}ms": 0 for bound in LATENCY_BUCKETS_MS}
    histogram["gt_10000ms"] = 0
    for value in samples:
        for bound in LATENCY_BUCKETS_MS:
            if value <= bound:
                histogram[f"le_{bound}ms"] += 1
                break
        else:
            histogram["gt_10000ms"] += 1
    return histogram


@settings(max_examples=200, deadline=None)
@given(SAMPLES)
def test_a_window_agrees_with_the_exact_summary_within_a_bucket(samples: list[float]) -> None:
    window = LatencyWindow.of(samples)
    exact, estimated = summarise(samples), summarise(window)
    assert estimated["count"] == exact["count"] == len(samples)
    assert estimated["mean"] == pytest.approx(exact["mean"], rel=1e-9, abs=0.011)
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        value = estimated[key]
        assert value is not None
        assert_close(float(value), percentile(samples, q), samples)
    assert window.wire_histogram() == wire_histogram_exact(samples)
    for q in (0, 100):  # the extremes are exact: clamped to the smallest and largest value
        assert window.percentiles([q]) == [min(samples) if q == 0 else max(samples)]


@settings(max_examples=100, deadline=None)
@given(SAMPLES, SAMPLES)
def test_merging_and_subtracting_windows_is_the_window_of_the_union(first: list[float], second: list[float]) -> None:
    merged = LatencyWindow.of(first)
    merged.merge(LatencyWindow.of(second))
    union = LatencyWindow.of(first + second)
    assert merged.count == union.count and merged.wire_histogram() == union.wire_histogram()
    assert summarise(merged)["p95"] == summarise(union)["p95"]
    merged.subtract(LatencyWindow.of(second))
    merged.low, merged.high = min(first), max(first)
    assert merged.count == len(first) and merged.wire_histogram() == wire_histogram_exact(first)
    assert set(merged.counts) == set(merged.sums) == set(LatencyWindow.of(first).counts)


def test_one_value_per_bucket_is_exact() -> None:
    # The pair route's own example: 0.5, 3 and 200 ms each sit alone in their bucket.
    assert summarise(LatencyWindow.of([0.5, 3.0, 200.0])) == summarise([0.5, 3.0, 200.0])
    assert summarise(LatencyWindow()) == summarise([])


NOTES = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=3 * 3600, allow_nan=False),  # when (seconds since the test's epoch)
        st.integers(min_value=0, max_value=50),  # records pulled
        st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), max_size=20),  # their latencies (s)
        st.booleans(),  # an error too
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(NOTES, st.floats(min_value=0, max_value=600, allow_nan=False))
def test_pair_stats_over_the_rolling_hour_match_the_samples_of_its_minutes(
    notes: list[tuple[float, int, list[float], bool]], after: float
) -> None:
    notes = sorted(notes, key=lambda note: note[0])
    stats = PairStats()
    for at, count, latencies, failed in notes:
        stats.note_pulled(count, latencies, at)
        if failed:
            stats.note_error(at)
    now = (notes[-1][0] if notes else 0.0) + after
    wire = stats.to_wire(now)

    first_minute = math.floor((now - 3600) / 60)  # the hour: every minute from the one holding now - 3600
    in_hour = [note for note in notes if math.floor(note[0] / 60) >= first_minute]
    in_minute = [note for note in notes if math.floor(note[0]) >= math.floor(now - 60)]
    assert wire["records_last_hour"] == sum(note[1] for note in in_hour)
    assert wire["records_last_minute"] == sum(note[1] for note in in_minute)
    assert wire["errors_last_hour"] == sum(1 for note in in_hour if note[3])
    samples = [latency * 1000 for note in in_hour for latency in note[2]]
    latency = wire["latency_ms"]
    assert latency["count"] == len(samples)
    assert wire["latency_histogram"] == wire_histogram_exact(samples)
    if samples:
        for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            assert_close(latency[key], percentile(samples, q), samples)
    # Since start (Prometheus): every latency ever noted, in the exported buckets.
    everything = [latency * 1000 for note in notes for latency in note[2]]
    assert stats.export_count == len(everything) == sum(stats.export_counts)
    bounds_ms = [bound * 1000 for bound in EXPORT_BUCKETS_S]
    for index, count in enumerate(stats.export_counts):
        assert count == sum(1 for value in everything if bisect.bisect_left(bounds_ms, value) == index)


def test_the_window_keeps_an_hour_and_forgets_what_is_older() -> None:
    stats = PairStats()
    stats.note_pulled(10, [0.010] * 10, now=0.0)
    stats.note_pulled(1, [2.0], now=3000.0)
    assert stats.to_wire(now=3000.0)["latency_ms"]["count"] == 11
    gone = stats.to_wire(now=3660.0 + 60)  # minute 0 is out of the hour
    assert gone["latency_ms"]["count"] == 1 and gone["latency_ms"]["p50"] == 2000.0
    assert gone["records_last_hour"] == 1
    stats.note_pulled(5, [0.001], now=30.0)  # a clock stepped back past the window: ignored, nothing breaks
    assert stats.to_wire(now=3720.0)["records_last_hour"] == 1
    assert stats.export_count == 12  # since start counts everything noted


def test_reads_cost_buckets_not_samples() -> None:
    # 100,000 latencies in one hour fill a few dozen buckets; the window holds those, never the samples.
    stats = PairStats()
    for second in range(0, 3600, 36):
        stats.note_pulled(1000, [0.001 * (n % 300) for n in range(1000)], now=float(second))
    window = stats.latency_since(0.0)
    assert window.count == 100_000 and len(window.buckets) < 80
