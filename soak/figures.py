"""Per-window figures from what a soak observed, sans I/O: lag percentiles, queue peaks, errors, the verdict.

The driver records raw observations (one :class:`RecordSample` per acknowledged emit, reads of the
receiver's reconcile queue and of each pair's ``errors_total``); this module turns them into one
:class:`WindowFigures` per window, the row of the seed's CSV. A figure that was not observed is
``None``, never 0: a window in which no record reached the receiver has no lag percentile, and a
window with no queue sample has no queue maximum (an empty CSV field, not a 0 that reads as "no lag").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spl.core.units import percentile
from spl.soak.plan import Window, window_index

__all__ = [
    "ErrorSample",
    "QueueSample",
    "RecordSample",
    "WindowFigures",
    "aggregate",
    "error_deltas_by_window",
    "error_points",
    "lag_ms",
    "problems",
    "queue_max_by_window",
    "whole_ms",
]


def lag_ms(source_committed: float, receiver_committed: float) -> float:
    """Sync lag of one record: committed on the receiver minus committed on the source (Unix seconds in, ms out)."""
    return (receiver_committed - source_committed) * 1000.0


@dataclass(frozen=True)
class RecordSample:
    """One acknowledged emit: when it was sent (run time), its window, and its lag (None: never synced)."""

    t: float
    window: int
    lag_ms: float | None


@dataclass(frozen=True)
class QueueSample:
    """One read of the receiver's ``reconcile_queue``; ``epoch`` counts receiver (re)starts."""

    t: float
    epoch: int
    depth: int
    high_water: int


@dataclass(frozen=True)
class ErrorSample:
    """One read of a pair's ``errors_total`` (an in-memory counter that restarts at 0 with the daemon)."""

    t: float
    epoch: int
    pair_id: str
    errors_total: int


@dataclass(frozen=True)
class WindowFigures:
    """One CSV row, plus the parts ``errors`` is made of and the emit rate that was achieved.

    ``sync_lag_*`` are None when no record of the window reached the receiver, and
    ``reconcile_queue_max`` when no queue sample fell in the window: unknown, not zero.
    """

    window: str
    duration_min: float
    records_emitted: int
    records_synced: int
    sync_lag_p50_ms: int | None
    sync_lag_p99_ms: int | None
    reconcile_queue_max: int | None
    pair_errors: int
    unsynced: int
    target_emits: float = 0.0

    @property
    def errors(self) -> int:
        return self.pair_errors + self.unsynced


def queue_max_by_window(windows: Sequence[Window], samples: Iterable[QueueSample]) -> list[int | None]:
    """The largest reconcile-queue depth seen in each window (None: no sample fell in it).

    ``depth`` is what the queue held at the sample; ``high_water`` is the daemon's
    lifetime maximum, so a rise of it between two samples is a peak the sampling
    missed — it happened after the previous sample, and is counted in this one's window.
    The first sample of an epoch before any restart is a baseline (its high water may
    come from before the run); after a restart the counter began at 0 with the new
    process, so its high water counts.
    """
    result: list[int | None] = [None] * len(windows)
    if not windows:
        return result
    end = windows[-1].end
    previous: QueueSample | None = None
    for sample in sorted(samples, key=lambda s: s.t):
        value = sample.depth
        if previous is not None:
            if sample.epoch != previous.epoch:
                value = max(value, sample.high_water)
            elif sample.high_water > previous.high_water:
                value = max(value, sample.high_water)
        previous = sample
        if 0 <= sample.t < end:
            index = window_index(windows, sample.t)
            seen = result[index]
            result[index] = value if seen is None else max(seen, value)
    return result


def error_points(samples: Iterable[ErrorSample]) -> list[tuple[float, int]]:
    """Pair-level errors as ``(run time, how many)``, from samples of ``errors_total``.

    Per pair, the first sample is the baseline; then each increase is counted at the sample
    that saw it. In a new epoch (the receiver restarted) the counter began at 0 again, so its
    whole value is new.
    """
    points: list[tuple[float, int]] = []
    last: dict[str, ErrorSample] = {}
    for sample in sorted(samples, key=lambda s: s.t):
        before = last.get(sample.pair_id)
        last[sample.pair_id] = sample
        if before is None:
            if sample.epoch == 0:
                continue
            delta = sample.errors_total
        elif sample.epoch != before.epoch:
            delta = sample.errors_total
        else:
            delta = max(0, sample.errors_total - before.errors_total)
        if delta:
            points.append((sample.t, delta))
    return points


def error_deltas_by_window(windows: Sequence[Window], samples: Iterable[ErrorSample]) -> list[int]:
    """Pair-level errors that happened in each window (:func:`error_points`, counted in the window of the
    sample that saw them). Samples after the last window (the drain) are counted in the last window: an
    error while draining still fails the run.
    """
    result = [0] * len(windows)
    if not windows:
        return result
    for t, delta in error_points(samples):
        if t >= 0:
            result[window_index(windows, t)] += delta
    return result


def whole_ms(value: float) -> int | None:
    """Milliseconds rounded half up to a whole number; None for NaN (the percentile of no samples)."""
    return None if math.isnan(value) else int(math.floor(value + 0.5))


def aggregate(
    windows: Sequence[Window],
    records: Iterable[RecordSample],
    queue_max: Sequence[int | None],
    pair_errors: Sequence[int],
    target_emits: Sequence[float] | None = None,
) -> list[WindowFigures]:
    """Per-window CSV figures from per-record samples and the sampled daemon figures.

    ``records_synced`` counts the window's records that reached the receiver; lags are
    nearest-rank percentiles (:func:`spl.core.units.percentile`, the one ``/v1/sync/health``
    uses) of those, rounded to whole milliseconds; ``errors`` adds the records that never
    arrived to the pair-level errors.
    """
    lags: list[list[float]] = [[] for _ in windows]
    emitted = [0] * len(windows)
    for record in records:
        emitted[record.window] += 1
        if record.lag_ms is not None:
            lags[record.window].append(record.lag_ms)
    rows: list[WindowFigures] = []
    for index, window in enumerate(windows):
        synced = len(lags[index])
        rows.append(
            WindowFigures(
                window=window.name,
                duration_min=window.minutes,
                records_emitted=emitted[index],
                records_synced=synced,
                sync_lag_p50_ms=whole_ms(percentile(lags[index], 50)),
                sync_lag_p99_ms=whole_ms(percentile(lags[index], 99)),
                reconcile_queue_max=queue_max[index],
                pair_errors=pair_errors[index],
                unsynced=emitted[index] - synced,
                target_emits=target_emits[index] if target_emits is not None else 0.0,
            )
        )
    return rows


def problems(rows: Sequence[WindowFigures]) -> list[str]:
    """Why a run fails (empty list: it passes): errors, or synced != emitted, in any window."""
    found: list[str] = []
    for row in rows:
        if row.records_synced != row.records_emitted:
            found.append(
                f"{row.window}: {row.records_synced} of {row.records_emitted} emitted records reached the receiver"
            )
        if row.pair_errors:
            found.append(f"{row.window}: {row.pair_errors} pair-level error(s) (errors_total rose on the receiver)")
    return found
