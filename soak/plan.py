"""The federation soak, sans I/O: window schedule, emit rate, per-window figures, CSV, SVG.

``spl federation soak`` (driver: :mod:`spl.soak.run`, command: :mod:`spl.cli.soak`)
reports, per window, exactly the CSV of the pairing seed (``001_…`` "Soak results")::

    window,duration_min,records_emitted,records_synced,sync_lag_p50_ms,sync_lag_p99_ms,reconcile_queue_max,errors

Everything here is pure: times are seconds since the start of the first window (the
driver reads them off trio's clock), lags are milliseconds, and nothing touches the
network, the disk or a clock. That keeps the maths testable on its own.

The load shape (seed proportions 5 / 15 / 60 / 5 / 15 minutes, ``R`` = the steady
emit rate per pair):

========== ================= ===================================
window     share of the run  emit rate per pair
========== ================= ===================================
warmup     5 %               0.5 R
ramp       15 %              0.5 R → R, linear
steady     60 %              R
spike      5 %               4 R
recovery   15 %              R
========== ================= ===================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

__all__ = [
    "CSV_HEADER",
    "SEED_MINUTES",
    "SEED_REFERENCE",
    "SEED_STEADY_RATE",
    "SEED_TOTAL_SECONDS",
    "WINDOW_NAMES",
    "ErrorSample",
    "QueueSample",
    "RecordSample",
    "Window",
    "WindowFigures",
    "aggregate",
    "emits_due",
    "error_deltas_by_window",
    "format_csv",
    "format_duration_min",
    "format_table",
    "lag_ms",
    "parse_seconds",
    "pause_seconds",
    "percentile",
    "plan_windows",
    "problems",
    "queue_max_by_window",
    "rate_at",
    "render_svg",
    "report_document",
    "window_index",
    "workload_plan",
]

WINDOW_NAMES = ("warmup", "ramp", "steady", "spike", "recovery")
SEED_MINUTES = (5.0, 15.0, 60.0, 5.0, 15.0)
SEED_TOTAL_SECONDS = sum(SEED_MINUTES) * 60.0  # 100 minutes
SEED_STEADY_RATE = 33_180 / 3_600  # records/s: the seed's steady window, 33,180 records in 60 minutes
#: Emit-rate multipliers (start, end) of each window, relative to the steady rate.
RATE_SHAPE = ((0.5, 0.5), (0.5, 1.0), (1.0, 1.0), (4.0, 4.0), (1.0, 1.0))
CSV_HEADER = (
    "window,duration_min,records_emitted,records_synced,sync_lag_p50_ms,sync_lag_p99_ms,reconcile_queue_max,errors"
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


# -- the schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One soak window: ``[start, end)`` seconds after the run starts, and its rate shape."""

    name: str
    start: float
    end: float
    rate_from: float  # multiplier of the steady rate at ``start``
    rate_to: float  # … and at ``end`` (linear in between)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0

    def at(self, fraction: float) -> float:
        """The time ``fraction`` (0..1) of the way through this window."""
        return self.start + fraction * self.seconds


def parse_seconds(text: str, option: str = "--duration") -> float:
    """``600`` / ``600s`` / ``10m`` / ``1h`` / ``500ms`` → seconds (> 0)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{option} {text!r} is not a duration; use seconds (600) or a unit: 90s, 10m, 1h")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{option} must be longer than zero")
    return seconds


def plan_windows(scale: float | None = None, duration: float | None = None) -> tuple[Window, ...]:
    """The five windows in the seed's proportions.

    Args:
        scale: multiplies the seed's 100 minutes (``0.1`` = 10 minutes, ``0.01`` = 1 minute).
        duration: the total length in seconds instead (exclusive with ``scale``).

    Returns:
        ``warmup, ramp, steady, spike, recovery``, back to back from time 0.

    Raises:
        ValueError: both or a non-positive value given.
    """
    if scale is not None and duration is not None:
        raise ValueError("give --scale or --duration, not both")
    if duration is not None:
        total = duration
    else:
        factor = 1.0 if scale is None else scale
        if not factor > 0 or math.isinf(factor):
            raise ValueError("--scale must be a positive number (0.1 = a 10-minute run)")
        total = SEED_TOTAL_SECONDS * factor
    if not total > 0 or math.isinf(total):
        raise ValueError("--duration must be longer than zero")
    windows: list[Window] = []
    start = 0.0
    share_total = sum(SEED_MINUTES)
    for index, (name, minutes, (rate_from, rate_to)) in enumerate(
        zip(WINDOW_NAMES, SEED_MINUTES, RATE_SHAPE, strict=True)
    ):
        end = total if index == len(WINDOW_NAMES) - 1 else start + total * minutes / share_total
        windows.append(Window(name, start, end, rate_from, rate_to))
        start = end
    return tuple(windows)


def window_index(windows: Sequence[Window], t: float) -> int:
    """The window ``t`` falls in (a boundary belongs to the later window); clamped to the run."""
    for index, window in enumerate(windows):
        if t < window.end:
            return index
    return len(windows) - 1


def rate_at(windows: Sequence[Window], steady_rate: float, t: float) -> float:
    """Emit rate per pair (records/s) at time ``t``; 0 outside the run."""
    if not windows or t < 0 or t >= windows[-1].end:
        return 0.0
    window = windows[window_index(windows, t)]
    fraction = (t - window.start) / window.seconds if window.seconds > 0 else 0.0
    return steady_rate * (window.rate_from + (window.rate_to - window.rate_from) * fraction)


def emits_due(windows: Sequence[Window], steady_rate: float, t: float) -> float:
    """Records one pair should have emitted by time ``t``: the integral of :func:`rate_at` over ``[0, t]``."""
    total = 0.0
    for window in windows:
        if t <= window.start:
            break
        span = min(t, window.end) - window.start
        slope = (window.rate_to - window.rate_from) / window.seconds if window.seconds > 0 else 0.0
        total += steady_rate * (window.rate_from * span + slope * span * span / 2)
    return total


# -- per-window figures ------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN when there are no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


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
    """One CSV row, plus the parts ``errors`` is made of and the emit rate that was achieved."""

    window: str
    duration_min: float
    records_emitted: int
    records_synced: int
    sync_lag_p50_ms: int
    sync_lag_p99_ms: int
    reconcile_queue_max: int
    pair_errors: int
    unsynced: int
    target_emits: float = 0.0

    @property
    def errors(self) -> int:
        return self.pair_errors + self.unsynced

    def csv(self) -> str:
        return ",".join(
            str(value)
            for value in (
                self.window,
                format_duration_min(self.duration_min),
                self.records_emitted,
                self.records_synced,
                self.sync_lag_p50_ms,
                self.sync_lag_p99_ms,
                self.reconcile_queue_max,
                self.errors,
            )
        )


def queue_max_by_window(windows: Sequence[Window], samples: Iterable[QueueSample]) -> list[int]:
    """The largest reconcile-queue depth seen in each window.

    ``depth`` is what the queue held at the sample; ``high_water`` is the daemon's
    lifetime maximum, so a rise of it between two samples is a peak the sampling
    missed — it happened after the previous sample, and is counted in this one's window.
    The first sample of an epoch before any restart is a baseline (its high water may
    come from before the run); after a restart the counter began at 0 with the new
    process, so its high water counts.
    """
    result = [0] * len(windows)
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
            result[index] = max(result[index], value)
    return result


def error_deltas_by_window(windows: Sequence[Window], samples: Iterable[ErrorSample]) -> list[int]:
    """Pair-level errors that happened in each window, from samples of ``errors_total``.

    Per pair, the first sample is the baseline; then each increase is counted in the
    window of the sample that saw it. In a new epoch (the receiver restarted) the
    counter began at 0 again, so its whole value is new. Samples after the last window
    (the drain) are counted in the last window: an error while draining still fails the run.
    """
    result = [0] * len(windows)
    if not windows:
        return result
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
        if delta and sample.t >= 0:
            result[window_index(windows, sample.t)] += delta
    return result


def _rounded(value: float) -> int:
    return 0 if math.isnan(value) else int(math.floor(value + 0.5))


def aggregate(
    windows: Sequence[Window],
    records: Iterable[RecordSample],
    queue_max: Sequence[int],
    pair_errors: Sequence[int],
    target_emits: Sequence[float] | None = None,
) -> list[WindowFigures]:
    """Per-window CSV figures from per-record samples and the sampled daemon figures.

    ``records_synced`` counts the window's records that reached the receiver; lags are
    nearest-rank percentiles of those, rounded to whole milliseconds; ``errors`` adds
    the records that never arrived to the pair-level errors.
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
                sync_lag_p50_ms=_rounded(percentile(lags[index], 50)),
                sync_lag_p99_ms=_rounded(percentile(lags[index], 99)),
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


# -- output --------------------------------------------------------------------------------


def format_duration_min(minutes: float) -> str:
    """``60`` for whole minutes, else up to three decimals (``0.5``, ``0.025``)."""
    text = f"{minutes:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def format_csv(rows: Sequence[WindowFigures]) -> str:
    """The seed's CSV: the exact header, then one line per window; ends with a newline."""
    return "\n".join([CSV_HEADER, *(row.csv() for row in rows)]) + "\n"


#: The seed's reference run (``001_…`` section 4), for comparison beside ours.
SEED_REFERENCE: tuple[WindowFigures, ...] = tuple(
    WindowFigures(name, minutes, emitted, emitted, p50, p99, queue, 0, 0)
    for name, minutes, emitted, p50, p99, queue in (
        ("warmup", 5.0, 1240, 180, 420, 3),
        ("ramp", 15.0, 8420, 210, 512, 7),
        ("steady", 60.0, 33180, 225, 548, 9),
        ("spike", 5.0, 4860, 610, 1290, 18),
        ("recovery", 15.0, 7240, 240, 580, 12),
    )
)


def format_table(rows: Sequence[WindowFigures], reference: Sequence[WindowFigures] = SEED_REFERENCE) -> str:
    """A readable table: our figures per window, with the seed's p50/p99/queue beside them."""
    headers = (
        "window",
        "min",
        "emitted",
        "target",
        "synced",
        "p50 ms",
        "p99 ms",
        "queue max",
        "errors",
        "| seed p50",
        "seed p99",
        "seed queue",
    )
    seed = {row.window: row for row in reference}
    cells: list[tuple[str, ...]] = [headers]
    for row in rows:
        ref = seed.get(row.window)
        cells.append(
            (
                row.window,
                format_duration_min(row.duration_min),
                str(row.records_emitted),
                f"{row.target_emits:.0f}" if row.target_emits else "-",
                str(row.records_synced),
                str(row.sync_lag_p50_ms),
                str(row.sync_lag_p99_ms),
                str(row.reconcile_queue_max),
                str(row.errors),
                f"| {ref.sync_lag_p50_ms}" if ref else "| -",
                str(ref.sync_lag_p99_ms) if ref else "-",
                str(ref.reconcile_queue_max) if ref else "-",
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for number, line in enumerate(cells):
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line))
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


# -- the plot --------------------------------------------------------------------------------

_BAND_COLOURS = ("#eef3fb", "#fdf6e3", "#eef8ee", "#fbeaea", "#f3eefb")


def _nice_ceiling_log(value: float) -> float:
    return 10.0 ** math.ceil(math.log10(max(value, 1.0)))


def render_svg(
    points: Sequence[tuple[float, float]],
    windows: Sequence[Window],
    *,
    title: str = "spl federation soak: sync lag over time",
    events: Sequence[tuple[float, str]] = (),
    references: Sequence[tuple[float, str]] = ((548.0, "seed steady p99 548 ms"), (1290.0, "seed spike p99 1290 ms")),
    bins: int = 300,
    width: int = 960,
    height: int = 480,
) -> str:
    """Sync lag against run time as a standalone SVG (no dependencies).

    The run is cut into ``bins`` slices; per slice the p50, p99 and maximum lag of the
    records emitted in it are drawn as three lines on a log-scale y axis. Windows are
    shaded bands with their names; ``events`` (pause, restarts) are dashed verticals.

    Args:
        points: ``(seconds since start, lag ms)`` per synced record.
        windows: the run's windows (the x axis spans them).
    """
    left, right, top, bottom = 70, 20, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    total = windows[-1].end if windows else max((t for t, _ in points), default=1.0)
    total = total if total > 0 else 1.0
    slices: list[list[float]] = [[] for _ in range(bins)]
    for t, lag in points:
        if 0 <= t < total:
            slices[min(bins - 1, int(t / total * bins))].append(max(lag, 0.0))
    highest = max((max(values) for values in slices if values), default=1.0)
    y_top = _nice_ceiling_log(max(highest, *(value for value, _ in references), 10.0))
    y_bottom = 1.0

    def x_of(t: float) -> float:
        return left + t / total * plot_w

    def y_of(ms: float) -> float:
        ms = min(max(ms, y_bottom), y_top)
        return (
            top + plot_h - (math.log10(ms) - math.log10(y_bottom)) / (math.log10(y_top) - math.log10(y_bottom)) * plot_h
        )

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for index, window in enumerate(windows):
        x0, x1 = x_of(window.start), x_of(window.end)
        out.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 0.0):.1f}" height="{plot_h}" '
            f'fill="{_BAND_COLOURS[index % len(_BAND_COLOURS)]}"/>'
        )
        out.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{top - 6}" text-anchor="middle" fill="#444">{escape(window.name)}</text>'
        )
    decade = y_bottom
    while decade <= y_top:
        y = y_of(decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ccc"/>')
        label = f"{decade / 1000:g} s" if decade >= 1000 else f"{decade:g} ms"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        decade *= 10
    for value, label in references:
        y = y_of(value)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#999" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{left + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#777">{escape(label)}</text>'
        )
    ticks = 10
    for tick in range(ticks + 1):
        t = total * tick / ticks
        x = x_of(t)
        label = f"{t / 60:.1f} min" if total >= 300 else f"{t:.0f} s"
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 5}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{label}</text>')
    for t, label in events:
        if 0 <= t <= total:
            x = x_of(t)
            out.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#b04" stroke-dasharray="3 3"/>'
            )
            out.append(
                f'<text x="{x + 3:.1f}" y="{top + 14}" fill="#b04" font-size="10" '
                f'transform="rotate(90 {x + 3:.1f} {top + 14})">{escape(label)}</text>'
            )
    series = (("max", 100.0, "#bbb"), ("p99", 99.0, "#e67e22"), ("p50", 50.0, "#2c6fbb"))
    for _, q, colour in series:
        coords = [
            f"{x_of((index + 0.5) / bins * total):.1f},{y_of(percentile(values, q)):.1f}"
            for index, values in enumerate(slices)
            if values
        ]
        if coords:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(coords)}"/>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 15}" text-anchor="middle">time since the run started</text>'
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">sync lag (log scale)</text>'
    )
    legend_x = left + 10
    out.append(
        f'<rect x="{legend_x - 5}" y="{top + plot_h - 52}" width="130" height="46" fill="white" '
        'fill-opacity="0.85" stroke="#ccc"/>'
    )
    for offset, (name, _, colour) in enumerate(reversed(series)):
        y = top + plot_h - 40 + offset * 14
        out.append(
            f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 20}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{legend_x + 25}" y="{y + 4}">{name} per slice</text>'
        )
    if not points:
        out.append(f'<text x="{width / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle">no samples</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def report_document(
    config: Mapping[str, Any],
    rows: Sequence[WindowFigures],
    windows: Sequence[Window],
    records: Sequence[RecordSample],
    queue: Sequence[QueueSample],
    events: Sequence[tuple[float, str]],
    problems_found: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``--out`` JSON: config, windows, per-window figures and every raw lag sample (plus ``extra``)."""
    return {
        "object": "federation_soak",
        "config": dict(config),
        "windows": [
            {"name": w.name, "start_s": round(w.start, 3), "end_s": round(w.end, 3), "rate": [w.rate_from, w.rate_to]}
            for w in windows
        ],
        "figures": [
            {
                "window": row.window,
                "duration_min": row.duration_min,
                "records_emitted": row.records_emitted,
                "target_emits": round(row.target_emits, 1),
                "records_synced": row.records_synced,
                "sync_lag_p50_ms": row.sync_lag_p50_ms,
                "sync_lag_p99_ms": row.sync_lag_p99_ms,
                "reconcile_queue_max": row.reconcile_queue_max,
                "pair_errors": row.pair_errors,
                "unsynced": row.unsynced,
                "errors": row.errors,
            }
            for row in rows
        ],
        "passed": not problems_found,
        "problems": list(problems_found),
        "events": [{"t_s": round(t, 3), "event": label} for t, label in events],
        "samples_columns": ["t_s", "window", "lag_ms"],
        "samples": [
            [round(r.t, 4), r.window, None if r.lag_ms is None else round(r.lag_ms, 3)]
            for r in sorted(records, key=lambda r: r.t)
        ],
        "queue_columns": ["t_s", "epoch", "depth", "high_water"],
        "queue": [[round(q.t, 3), q.epoch, q.depth, q.high_water] for q in queue],
        **(extra or {}),
    }


# -- the mixed workload ----------------------------------------------------------------------


def pause_seconds(windows: Sequence[Window]) -> float:
    """How long the pair(s) stay paused: 0.5 % of the steady window, between 0.1 s and 2 s.

    Records emitted while paused wait for the resume, so the pause is kept well inside
    the 1 % of records that p99 may leave out.
    """
    steady = windows[WINDOW_NAMES.index("steady")]
    return min(2.0, max(0.1, 0.005 * steady.seconds))


def workload_plan(windows: Sequence[Window], *, faults: bool) -> list[tuple[float, str]]:
    """The control actions of a run, as ``(run time, action)`` in time order.

    Always: ``pause`` 40 % into steady — the pair (with ``--pairs``, the first eight)
    is paused, held for :func:`pause_seconds`, then resumed, each on its own clock.
    With ``faults``: ``restart`` (SIGTERM, start again) of the receiving daemon half-way
    through ramp, and ``kill`` (``kill -9``, start again) 70 % into steady.
    """
    ramp = windows[WINDOW_NAMES.index("ramp")]
    steady = windows[WINDOW_NAMES.index("steady")]
    plan = [(steady.at(0.4), "pause")]
    if faults:
        plan += [(ramp.at(0.5), "restart"), (steady.at(0.7), "kill")]
    return sorted(plan)
