"""Rolling federation figures (1-hour window, in memory, reset on restart): pure bookkeeping.

Feeds ``GET /v1/sync/health``, ``GET /v1/sync/pairs/{id}/stats`` and ``/metrics``: records pulled per
minute/hour, delivery latency (committed here minus created at the source), errors.

Delivery latency is kept as fixed-bucket counts, never as samples: a pair pulling a thousand records a second
used to keep (and sort, on every read) 20,000 samples, and still only saw the last 20 seconds of its hour. Now:

- **Buckets.** :data:`FINE_BOUNDS_MS` are eight per doubling from 0.25 ms to ~25 days, plus every bound the
  answers name (:data:`LATENCY_BUCKETS_MS`, :data:`EXPORT_BUCKETS_S`), so their counts are exact sums of fine
  buckets. Each bucket keeps its count and the sum of its values.
- **The window** is a ring of per-minute slots (61 of them: the hour plus the minute in progress), each a
  :class:`LatencyWindow` with the records pulled and errors of that minute; a running total of the slots in the
  window is kept alongside, so a read costs O(buckets touched), not O(samples) and not O(slots × buckets).
  "The last hour" covers the slots whose minute starts at or after ``now - 3600`` rounded down to its minute:
  between 60 and 61 minutes. "The last minute" of records pulled is exact to a second (a 61-slot ring of seconds).
- **Percentiles** are nearest-rank (the rank :func:`spl.core.units.percentile` uses), read from the bucket that
  holds that rank: exact when the bucket holds one value (its sum), else interpolated within the bucket and
  clamped to the window's smallest and largest value. The true value lies in the same bucket, so the error is at
  most the bucket's width: below 2^(1/8) - 1 ≈ 9.1 % of the true value above 0.25 ms, at most 0.25 ms below it
  (a latency made negative by clock skew falls in the first bucket, whose lower edge is the window's minimum).
  Count, mean, minimum and maximum are exact; ``tests/core/test_syncstats_histogram.py`` checks the bound.
- **Since start** (for Prometheus, which wants counters): :data:`EXPORT_BUCKETS_S` counts, their sum and count.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import math
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from spl.core.units import percentile

__all__ = [
    "EXPORT_BUCKETS_S",
    "FINE_BOUNDS_MS",
    "LATENCY_BUCKETS_MS",
    "LatencyWindow",
    "PairStats",
    "parse_rfc3339",
    "source_times",
    "summarise",
]

WINDOW = 3600.0
# The buckets the JSON answers show (``latency_histogram``: le_1ms … gt_10000ms).
LATENCY_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# The buckets ``/metrics`` exports per pair (seconds, Prometheus' unit): the JSON ones plus catch-up scale, where a
# pair that was down for an hour delivers hour-old records. Few on purpose: each is a series per pair.
EXPORT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0)

_PER_DOUBLING = 8
_FLOOR_MS = 0.25
_DOUBLINGS = 33  # 0.25 ms · 2^33 ≈ 2.1e9 ms ≈ 25 days; beyond that one overflow bucket (clamped to the maximum)
FINE_BOUNDS_MS: tuple[float, ...] = tuple(
    sorted(
        {_FLOOR_MS * 2 ** (k / _PER_DOUBLING) for k in range(_PER_DOUBLING * _DOUBLINGS + 1)}
        | {float(bound) for bound in LATENCY_BUCKETS_MS}
        | {bound * 1000 for bound in EXPORT_BUCKETS_S}
    )
)
# Fine bucket i holds the values in (FINE_BOUNDS_MS[i-1], FINE_BOUNDS_MS[i]]; bucket len(FINE_BOUNDS_MS) the rest.
_OVERFLOW = len(FINE_BOUNDS_MS)
# Fine bucket → the JSON bucket / the exported bucket it falls in (the last index of each: above every bound).
_TO_WIRE = tuple(bisect.bisect_left(LATENCY_BUCKETS_MS, b) for b in FINE_BOUNDS_MS) + (len(LATENCY_BUCKETS_MS),)
_EXPORT_MS = tuple(bound * 1000 for bound in EXPORT_BUCKETS_S)
_TO_EXPORT = tuple(bisect.bisect_left(_EXPORT_MS, b) for b in FINE_BOUNDS_MS) + (len(EXPORT_BUCKETS_S),)
_WIRE_KEYS = (*(f"le_{bound}ms" for bound in LATENCY_BUCKETS_MS), "gt_10000ms")
_SLOTS = 61  # minutes (and seconds) kept: the window plus the one in progress


# The form every spl daemon serves (``spl.core.stored``): parsed by slicing, the day looked up once.
_SERVED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|6[01])(\.[0-9]{1,9})?Z")


def parse_rfc3339(text: object) -> float | None:
    """``2026-11-21T02:23:45.807252Z`` → Unix seconds; None for anything else.

    Every pulled record's ``created_at`` passes here (delivery latency), so the served form is parsed
    by slicing with the start of its day cached; any other spelling goes through ``strptime``.
    """
    if not isinstance(text, str) or not text.endswith("Z") or len(text) < 20:
        return None
    if _SERVED.fullmatch(text):
        day = _day_start(text[:10])
        if day is not None:
            seconds = day + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
            return seconds + (float("0" + text[19:-1]) if len(text) > 20 else 0.0)
    return _parse_strptime(text)


@functools.lru_cache(maxsize=64)
def _day_start(day: str) -> int | None:
    """Unix seconds at the start of ``YYYY-MM-DD`` (None for a date that does not exist)."""
    try:
        return calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    except ValueError:
        return None


def _parse_strptime(text: str) -> float | None:
    try:
        whole, _, fraction = text[:-1].partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def source_times(records: list[dict[str, Any]]) -> dict[str, float]:
    """id → when the source committed it (its ``created_at``), for delivery latency.

    Records of one source transaction share their ``created_at``; each distinct text is parsed once.
    """
    times: dict[str, float] = {}
    parsed: dict[str, float | None] = {}
    for record in records:
        text, record_id = record.get("created_at"), record.get("id")
        if not isinstance(text, str) or not isinstance(record_id, str):
            continue
        created = parsed[text] if text in parsed else parsed.setdefault(text, parse_rfc3339(text))
        if created is not None:
            times[record_id] = created
    return times


class LatencyWindow:
    """Latencies (milliseconds) as fixed-bucket counts: mergeable, subtractable, read in O(buckets touched).

    ``counts`` and ``sums`` map a fine bucket index to its count and the sum of its values: two dicts of plain
    numbers, which the garbage collector does not track (a list per bucket would be one more object for every
    collection to walk, in every minute of every pair). ``low``/``high`` are the smallest and largest value
    added (not kept through :meth:`subtract`: :class:`PairStats` recomputes them from its slots).
    """

    __slots__ = ("count", "counts", "high", "low", "sums", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.sums: dict[int, float] = {}
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> LatencyWindow:
        window = cls()
        window.add_all(values_ms)
        return window

    @property
    def buckets(self) -> dict[int, int]:
        """The fine buckets touched, with their counts."""
        return self.counts

    def add_all(self, values_ms: Iterable[float]) -> None:
        counts, sums, bounds = self.counts, self.sums, FINE_BOUNDS_MS
        for value in values_ms:
            index = bisect.bisect_left(bounds, value)
            counts[index] = counts.get(index, 0) + 1
            sums[index] = sums.get(index, 0.0) + value
            self.count += 1
            self.total += value
            if value < self.low:
                self.low = value
            if value > self.high:
                self.high = value

    def merge(self, other: LatencyWindow) -> None:
        counts, sums = self.counts, self.sums
        for index, count in other.counts.items():
            counts[index] = counts.get(index, 0) + count
        for index, total in other.sums.items():
            sums[index] = sums.get(index, 0.0) + total
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def subtract(self, other: LatencyWindow) -> None:
        """Take away a window that was merged into this one (a slot leaving the hour)."""
        counts, sums = self.counts, self.sums
        for index, count in other.counts.items():
            left = counts[index] - count
            if left > 0:
                counts[index] = left
                sums[index] -= other.sums[index]
            else:
                del counts[index], sums[index]
        self.count -= other.count
        self.total = self.total - other.total if self.count > 0 else 0.0

    def copy(self) -> LatencyWindow:
        window = LatencyWindow()
        window.counts, window.sums = dict(self.counts), dict(self.sums)
        window.count, window.total, window.low, window.high = self.count, self.total, self.low, self.high
        return window

    def percentiles(self, qs: Iterable[float]) -> list[float | None]:
        """Nearest-rank percentiles (``q`` in 0..100), within one bucket's width of the exact ones (module doc)."""
        wanted = sorted((max(1, math.ceil(q / 100 * self.count)), position) for position, q in enumerate(qs))
        found: list[float | None] = [None] * len(wanted)
        if not self.count:
            return found
        low, high, counts = self.low, self.high, self.counts
        seen, pending = 0, 0
        for index in sorted(counts):
            count = counts[index]
            first = seen + 1
            seen += count
            while pending < len(wanted) and wanted[pending][0] <= seen:
                rank, position = wanted[pending]
                if rank == 1 or rank == self.count:  # the smallest or the largest value: known exactly
                    found[position] = low if rank == 1 else high
                else:
                    found[position] = self._estimate(index, count, self.sums[index], rank - first + 1, low, high)
                pending += 1
            if pending == len(wanted):
                break
        return found

    @staticmethod
    def _estimate(index: int, count: int, total: float, rank: int, low: float, high: float) -> float:
        """The ``rank``-th (1-based) value of ``count`` in fine bucket ``index``: spread evenly over the bucket."""
        if count == 1:
            return min(max(total, low), high)  # the value itself (a clamp absorbs float drift from subtraction)
        lower = FINE_BOUNDS_MS[index - 1] if index > 0 else low
        upper = FINE_BOUNDS_MS[index] if index < _OVERFLOW else high
        lower, upper = max(lower, low), min(upper, high)
        return lower + (upper - lower) * rank / (count + 1)

    def summary(self) -> dict[str, float | int | None]:
        """What :func:`summarise` answers for the values this window counted."""
        if not self.count:
            return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
        p50, p95, p99 = self.percentiles((50, 95, 99))
        return {
            "count": self.count,
            "mean": round(self.total / self.count, 2),
            "p50": round(p50, 2) if p50 is not None else None,
            "p95": round(p95, 2) if p95 is not None else None,
            "p99": round(p99, 2) if p99 is not None else None,
        }

    def wire_histogram(self) -> dict[str, int]:
        """Counts per :data:`LATENCY_BUCKETS_MS` bucket (not cumulative), as ``le_<bound>ms`` / ``gt_10000ms``."""
        histogram = [0] * len(_WIRE_KEYS)
        for index, count in self.counts.items():
            histogram[_TO_WIRE[index]] += count
        return dict(zip(_WIRE_KEYS, histogram, strict=True))

    def estimates_ms(self) -> list[float]:
        """One estimated value per latency counted (for callers that still want a list; O(count))."""
        values: list[float] = []
        for index in sorted(self.counts):
            count, total = self.counts[index], self.sums[index]
            values.extend(
                self._estimate(index, count, total, rank, self.low, self.high) for rank in range(1, count + 1)
            )
        return values


class _Minute:
    """One minute of a pair's figures: records pulled, errors, and the latencies of what it pulled."""

    __slots__ = ("errors", "latency", "minute", "records")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.records = 0
        self.errors = 0
        self.latency = LatencyWindow()


class PairStats:
    """One pair's rolling figures (module doc): O(1) memory per minute touched, O(buckets) per read.

    ``note_*`` are called on the trio thread as pulls commit; the reads run there too (the routes and the
    metrics scrape), so nothing is locked.
    """

    def __init__(self) -> None:
        self._minutes: deque[_Minute] = deque()  # oldest first, at most _SLOTS, minutes ≥ self._floor
        self._floor = -(2**62)  # minutes before this were dropped from the window: a late note for one is ignored
        # Running totals of every slot in self._minutes, so the hour's figures are read without a walk.
        self._window = LatencyWindow()
        self._records = 0
        self._errors = 0
        self._extremes_stale = False  # a slot left: the window's low/high are recomputed at the next read
        self._seconds: deque[list[int]] = deque()  # [second, records], oldest first, at most _SLOTS
        self._seconds_floor = -(2**62)
        # Since start, for Prometheus: counts per EXPORT_BUCKETS_S bucket (not cumulative), their sum and count.
        self.export_counts = [0] * (len(EXPORT_BUCKETS_S) + 1)
        self.export_sum_ms = 0.0
        self.export_count = 0

    # -- writes -----------------------------------------------------------------------------------------------

    def note_pulled(self, count: int, latencies_s: list[float], now: float) -> None:
        slot = self._slot(int(now // 60))
        if slot is not None:
            slot.records += count
            self._records += count
        self._note_second(int(now // 1), count)
        if not latencies_s:
            return
        values = [latency * 1000 for latency in latencies_s]
        if slot is not None:
            fresh = LatencyWindow.of(values)
            slot.latency.merge(fresh)
            self._window.merge(fresh)  # low/high too: adding only widens them
        export, to_export, bounds = self.export_counts, _TO_EXPORT, FINE_BOUNDS_MS
        for value in values:
            export[to_export[bisect.bisect_left(bounds, value)]] += 1
        self.export_sum_ms += sum(values)
        self.export_count += len(values)

    def note_error(self, now: float) -> None:
        slot = self._slot(int(now // 60))
        if slot is not None:
            slot.errors += 1
            self._errors += 1

    def _slot(self, minute: int) -> _Minute | None:
        """The slot of ``minute`` (made if new); None for a minute already out of the window (a clock step back)."""
        minutes = self._minutes
        if minutes and minutes[-1].minute == minute:
            return minutes[-1]
        if minute < self._floor or (minutes and minute <= minutes[-1].minute - _SLOTS):
            return None
        if not minutes or minute > minutes[-1].minute:
            slot = _Minute(minute)
            minutes.append(slot)
            self._expire(minute - _SLOTS + 1)
            return slot
        for position in range(len(minutes) - 1, -1, -1):  # an earlier minute (the clock stepped back): rare
            if minutes[position].minute == minute:
                return minutes[position]
            if minutes[position].minute < minute:
                slot = _Minute(minute)
                minutes.insert(position + 1, slot)
                return slot
        slot = _Minute(minute)
        minutes.appendleft(slot)
        return slot

    def _expire(self, first_kept: int) -> None:
        """Drop the minutes before ``first_kept`` from the window (and their latencies from the running total)."""
        minutes = self._minutes
        while minutes and minutes[0].minute < first_kept:
            slot = minutes.popleft()
            self._window.subtract(slot.latency)
            self._records -= slot.records
            self._errors -= slot.errors
            self._extremes_stale = True
        self._floor = max(self._floor, first_kept)

    def _note_second(self, second: int, count: int) -> None:
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1][1] += count
        elif second >= self._seconds_floor and (not seconds or second > seconds[-1][0]):
            seconds.append([second, count])
            while seconds[0][0] <= second - _SLOTS:
                self._seconds_floor = seconds.popleft()[0] + 1
        # else an earlier second (the clock stepped back): counted in its minute only

    # -- reads ------------------------------------------------------------------------------------------------

    def records_since(self, since: float) -> int:
        """Records pulled at or after ``since``: to the second within the last minute, else to the minute."""
        first_second = int(since // 1)
        if not self._seconds or self._seconds[-1][0] < first_second:
            return 0  # nothing pulled since (an idle pair: no walk)
        if first_second >= self._seconds_floor:
            return sum(count for second, count in self._seconds if second >= first_second)
        first = int(since // 60)
        return sum(slot.records for slot in self._minutes if slot.minute >= first)

    def errors_since(self, since: float) -> int:
        first = int(since // 60)
        return sum(slot.errors for slot in self._minutes if slot.minute >= first)

    def latency_since(self, since: float) -> LatencyWindow:
        """The latencies (ms) of the minutes from ``since`` (rounded down to its minute): a window to read or merge.

        O(buckets touched) when ``since`` reaches back to the oldest slot kept (the hour); otherwise the
        minutes asked for are merged (O(minutes × buckets)).
        """
        first = int(since // 60)
        if not self._minutes or self._minutes[0].minute >= first:
            return self._hour().copy()
        kept = [slot for slot in self._minutes if slot.minute >= first]
        window = LatencyWindow()
        for slot in kept:
            window.merge(slot.latency)
        return window

    def _hour(self) -> LatencyWindow:
        """The running window itself (every slot kept), its extremes refreshed: read it, never change it."""
        window = self._window
        if self._extremes_stale:
            window.low = min((slot.latency.low for slot in self._minutes), default=math.inf)
            window.high = max((slot.latency.high for slot in self._minutes), default=-math.inf)
            self._extremes_stale = False
        return window

    def latencies_since(self, since: float) -> list[float]:
        """Estimated latencies (seconds) from ``since``, one per record: O(records). Prefer :meth:`latency_since`."""
        return [value / 1000 for value in self.latency_since(since).estimates_ms()]

    def to_wire(self, now: float) -> dict[str, Any]:
        self._expire(int((now - WINDOW) // 60))  # what is left is the hour: its running totals are the figures
        latency = self._hour()
        return {
            "records_last_minute": self.records_since(now - 60),
            "records_last_hour": self._records,
            "records_per_minute": round(self._records / 60, 2),
            "errors_last_hour": self._errors,
            "latency_ms": latency.summary(),
            "latency_histogram": latency.wire_histogram(),
        }


def summarise(latencies_ms: list[float] | LatencyWindow) -> dict[str, float | int | None]:
    """Count, mean and nearest-rank percentiles (``spl.core.units.percentile``, as the soak reports them).

    A list is summarised exactly; a :class:`LatencyWindow` within its buckets' width (module doc).
    """
    if isinstance(latencies_ms, LatencyWindow):
        return latencies_ms.summary()
    if not latencies_ms:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
    return {
        "count": len(latencies_ms),
        "mean": round(sum(latencies_ms) / len(latencies_ms), 2),
        "p50": round(percentile(latencies_ms, 50), 2),
        "p95": round(percentile(latencies_ms, 95), 2),
        "p99": round(percentile(latencies_ms, 99), 2),
    }
