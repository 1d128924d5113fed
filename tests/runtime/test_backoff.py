"""The backoff schedule (runtime/backoff.py): exact arithmetic, seeded jitter, cap, resets."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from spl.runtime.backoff import Backoff


def test_without_jitter_the_schedule_doubles_up_to_the_cap() -> None:
    backoff = Backoff(jitter=0.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]
    assert backoff.attempt == 12


def test_peek_is_the_unjittered_delay_and_does_not_advance() -> None:
    backoff = Backoff(base=1.0, cap=300.0)
    assert [backoff.peek(n) for n in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff.attempt == 0


def test_peek_of_a_huge_attempt_is_the_cap_not_an_overflow() -> None:
    assert Backoff(cap=30.0).peek(10_000) == 30.0


def test_seeded_jitter_is_reproducible_and_pinned() -> None:
    # Pinned values: later code (federation pairs) relies on this exact schedule for a given seed.
    backoff = Backoff(rng=random.Random(42))
    assert [backoff.next_delay() for _ in range(4)] == [
        0.10557707193831534,
        0.16200086041781336,
        0.3640046909390591,
        0.7114274362076234,
    ]
    pair = Backoff(base=1.0, cap=300.0, rng=random.Random(7))
    assert [pair.next_delay() for _ in range(3)] == [0.929533105933265, 1.7206793391396016, 4.241495156863766]


def test_jittered_delay_follows_the_documented_formula() -> None:
    backoff = Backoff(base=1.0, cap=300.0, jitter=0.5, rng=random.Random(3))
    reference = random.Random(3)
    for attempt in range(20):
        d = min(300.0, 1.0 * 2.0**attempt)
        expected = min(300.0, max(0.0, d * (1 + reference.uniform(-0.5, 0.5))))
        assert backoff.next_delay() == expected


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_its_band_and_never_exceeds_the_cap(seed: int) -> None:
    backoff = Backoff(base=1.0, cap=300.0, jitter=0.2, rng=random.Random(seed))
    for attempt in range(30):
        delay = backoff.next_delay()
        d = backoff.peek(attempt)
        assert 0.0 <= delay <= 300.0
        assert d * 0.8 - 1e-9 <= delay <= d * 1.2 + 1e-9


def test_full_jitter_never_goes_negative_or_over_the_cap() -> None:
    backoff = Backoff(base=10.0, cap=10.0, jitter=1.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= 10.0 for d in delays)
    assert max(delays) == 10.0  # upward jitter at the cap is clamped, not passed through


def test_reset_starts_the_schedule_again() -> None:
    backoff = Backoff(jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 0.1


def test_note_quiet_resets_only_after_a_long_enough_quiet_period() -> None:
    backoff = Backoff(jitter=0.0, reset_after=60.0)
    for _ in range(3):
        backoff.next_delay()
    backoff.note_quiet(59.999)
    assert backoff.attempt == 3
    assert backoff.next_delay() == 0.8
    backoff.note_quiet(60.0)
    assert backoff.attempt == 0
    assert backoff.next_delay() == 0.1


@pytest.mark.parametrize(
    "make",
    [
        lambda: Backoff(base=-1.0),
        lambda: Backoff(cap=-1.0),
        lambda: Backoff(factor=0.5),
        lambda: Backoff(jitter=-0.1),
        lambda: Backoff(jitter=1.5),
        lambda: Backoff(reset_after=-1.0),
    ],
)
def test_nonsense_parameters_are_refused(make: Callable[[], Backoff]) -> None:
    with pytest.raises(ValueError):
        make()
