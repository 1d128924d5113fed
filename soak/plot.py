"""The soak's lag plot, sans I/O: sync lag over run time as a standalone SVG (no plotting library).

Per slice of run time, the p50, p99 and maximum lag of the records emitted in it, on a log scale,
with the windows as shaded bands, the control events (pause, resume, restarts) as labelled
verticals and the reference run's p99s (seed 001, named as such) as dashed horizontals. A strip
under it shows what the lag is measured against: records emitted per second, and where errors
happened (records that never arrived, rises of a pair's error counter).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from spl.core.units import percentile
from spl.soak.plan import Window
from spl.soak.report import SEED_REFERENCE

__all__ = [
    "ERROR_COLOUR",
    "EVENT_FONT",
    "REFERENCE_LINES",
    "SERIES",
    "THROUGHPUT_COLOUR",
    "LabelBox",
    "event_label_boxes",
    "render_svg",
]

#: (name, percentile, colour, dash pattern) in drawing order: later lines are drawn on top of earlier ones.
#: max is last, dashed and in a colour of its own, so p99 shows through its gaps where the two agree.
SERIES: tuple[tuple[str, float, str, str | None], ...] = (
    ("p50", 50.0, "#2c6fbb", None),
    ("p99", 99.0, "#e67e22", None),
    ("max", 100.0, "#7b2d8e", "5 3"),
)
#: The reference run's p99s drawn as horizontals, each labelled as what it is: another run's figure.
REFERENCE_LINES: tuple[tuple[float, str], ...] = tuple(
    (float(row.sync_lag_p99_ms), f"reference run (seed 001): {row.window} p99 {row.sync_lag_p99_ms} ms")
    for row in SEED_REFERENCE
    if row.window in ("steady", "spike") and row.sync_lag_p99_ms is not None
)
THROUGHPUT_COLOUR = "#2e8b57"
ERROR_COLOUR = "#c0392b"
EVENT_FONT = 10  # px, the event labels
_CHAR_WIDTH = 0.62  # a sans-serif character's advance, in font sizes (generous, so estimates err wide)
_LABEL_GAP = 6.0  # px between two labels stacked in one column


@dataclass(frozen=True)
class LabelBox:
    """Where a rotated event label sits: ``x0..x1`` across (the glyphs' height), ``y0..y1`` down (its length)."""

    x0: float
    x1: float
    y0: float
    y1: float

    def overlaps(self, other: LabelBox) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


def event_label_boxes(events: Sequence[tuple[float, str]], first_y: float) -> list[LabelBox]:
    """Boxes for the labels of events at x positions ``events[i][0]``, none overlapping another.

    Each label reads downwards beside its line, starting at ``first_y``; a label that would
    cross one already placed (a pause and its resume a tenth of a second apart are one pixel
    apart) starts below it instead. Lengths are estimated from the character count.
    """
    placed: list[LabelBox] = []
    for x, label in events:
        length = len(label) * EVENT_FONT * _CHAR_WIDTH
        box = LabelBox(x, x + 3 + EVENT_FONT * 1.2, first_y, first_y + length)
        while (hit := next((other for other in placed if box.overlaps(other)), None)) is not None:
            y0 = hit.y1 + _LABEL_GAP
            box = LabelBox(box.x0, box.x1, y0, y0 + length)
        placed.append(box)
    return placed


def _strip(
    emitted: Sequence[float],
    errors: Sequence[tuple[float, int]],
    total: float,
    x_of: Callable[[float], float],
    left: float,
    width: float,
    top: float,
    height: float,
    bins: int = 100,
) -> list[str]:
    """The strip under the lag panel: emitted records/s per slice (a line), errors as red marks with counts.

    Error marks closer than a label's width are merged into one (their counts added), so labels never
    overlap however many errors a run has.
    """
    out = [
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="#fafafa" stroke="#333"/>',
        f'<text x="{left}" y="{top - 6}" fill="{THROUGHPUT_COLOUR}">records emitted per second</text>',
    ]
    slice_seconds = total / bins
    counts = [0] * bins
    for t in emitted:
        if 0 <= t < total:
            counts[min(bins - 1, int(t / total * bins))] += 1
    peak = max(counts, default=0) / slice_seconds
    if peak > 0:
        scale = (height - 14) / peak  # px per record/s; the peak sits just under the strip's top
        coords = " ".join(
            f"{x_of((index + 0.5) * slice_seconds):.1f},{top + height - count / slice_seconds * scale:.1f}"
            for index, count in enumerate(counts)
        )
        out.append(
            f'<polyline class="throughput" fill="none" stroke="{THROUGHPUT_COLOUR}" stroke-width="1.5" '
            f'points="{coords}"/>'
        )
        out.append(f'<text x="{left - 6}" y="{top + 18}" text-anchor="end" font-size="10">{peak:.3g}/s</text>')
    out.append(f'<text x="{left - 6}" y="{top + height}" text-anchor="end" font-size="10">0</text>')
    marks: list[list[float]] = []  # [x, count], merged when closer than a label
    for t, count in sorted(errors):
        if count <= 0 or not 0 <= t <= total:
            continue
        x = x_of(t)
        if marks and x - marks[-1][0] < 30:
            marks[-1][1] += count
        else:
            marks.append([x, count])
    legend = f"errors: {sum(int(c) for _, c in marks)}" if marks else "errors: none"
    out.append(
        f'<text x="{left + width}" y="{top - 6}" text-anchor="end" fill="{ERROR_COLOUR}">{legend} '
        "(records never synced, pair errors)</text>"
    )
    for x, merged in marks:
        out.append(
            f'<line class="error" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" stroke="{ERROR_COLOUR}" '
            'stroke-width="2"/>'
            f'<text class="error-count" x="{x + 3:.1f}" y="{top + 12}" fill="{ERROR_COLOUR}" font-size="10">'
            f"{int(merged)}</text>"
        )
    return out


def _dashes(pattern: str | None) -> str:
    return "" if pattern is None else f' stroke-dasharray="{pattern}"'


_BAND_COLOURS = ("#eef3fb", "#fdf6e3", "#eef8ee", "#fbeaea", "#f3eefb")


def _nice_ceiling_log(value: float) -> float:
    return 10.0 ** math.ceil(math.log10(max(value, 1.0)))


def render_svg(
    points: Sequence[tuple[float, float]],
    windows: Sequence[Window],
    *,
    title: str = "spl federation soak: sync lag over time",
    events: Sequence[tuple[float, str]] = (),
    references: Sequence[tuple[float, str]] = REFERENCE_LINES,
    emitted: Sequence[float] = (),
    errors: Sequence[tuple[float, int]] = (),
    bins: int = 300,
    width: int = 960,
    height: int = 600,
) -> str:
    """Sync lag against run time as a standalone SVG (no dependencies).

    The run is cut into ``bins`` slices; per slice the p50, p99 and maximum lag of the
    records emitted in it are drawn as three lines on a log-scale y axis. Windows are
    shaded bands with their names; ``events`` (pause, restarts) are dashed verticals whose
    labels never overlap (:func:`event_label_boxes`). The max line is drawn last, dashed and
    darker: in a slice of at most 100 records the nearest-rank p99 *is* the maximum, and a max
    line drawn under p99 would vanish exactly where the two agree.

    Under the lag panel, a strip on the same time axis (:func:`_strip`): records emitted per second
    and a red mark with its count wherever errors happened, so a lag spike can be read against the
    load and the failures beside it.

    Args:
        points: ``(seconds since start, lag ms)`` per synced record.
        windows: the run's windows (the x axis spans them).
        emitted: run time of every emitted record (synced or not), for the throughput line.
        errors: ``(run time, count)`` of errors: records that never arrived, rises of ``errors_total``.
    """
    left, right, top, bottom = 70, 20, 50, 60
    strip_h, strip_gap = 90, 44  # the gap holds the lag panel's time labels, then the strip's titles
    plot_w, plot_h = width - left - right, height - top - bottom - strip_h - strip_gap
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
    strip_top = top + plot_h + strip_gap
    ticks = 10
    for tick in range(ticks + 1):
        t = total * tick / ticks
        x = x_of(t)
        label = f"{t / 60:.1f} min" if total >= 300 else f"{t:.0f} s"
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 5}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{label}</text>')
        out.append(
            f'<line x1="{x:.1f}" y1="{strip_top + strip_h}" x2="{x:.1f}" y2="{strip_top + strip_h + 5}" stroke="#333"/>'
        )
    shown = [(x_of(t), label) for t, label in events if 0 <= t <= total]
    for box, (x, label) in zip(event_label_boxes(shown, top + 14), shown, strict=True):
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#b04" stroke-dasharray="3 3"/>'
        )
        out.append(
            f'<text x="{x + 3:.1f}" y="{box.y0:.1f}" fill="#b04" font-size="{EVENT_FONT}" '
            f'transform="rotate(90 {x + 3:.1f} {box.y0:.1f})">{escape(label)}</text>'
        )
    for name, q, colour, dashes in SERIES:
        coords = [
            f"{x_of((index + 0.5) / bins * total):.1f},{y_of(percentile(values, q)):.1f}"
            for index, values in enumerate(slices)
            if values
        ]
        if coords:
            out.append(
                f'<polyline class="lag-{name}" fill="none" stroke="{colour}" stroke-width="1.5"{_dashes(dashes)} '
                f'points="{" ".join(coords)}"/>'
            )
    out.extend(_strip(emitted, errors, total, x_of, left, plot_w, strip_top, strip_h))
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 15}" text-anchor="middle">time since the run started</text>'
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">sync lag (log scale)</text>'
    )
    legend_x = left + 10
    out.append(
        f'<rect x="{legend_x - 5}" y="{top + plot_h - 66}" width="250" height="60" fill="white" '
        'fill-opacity="0.85" stroke="#ccc"/>'
    )
    for offset, (name, _, colour, dashes) in enumerate(SERIES):
        y = top + plot_h - 54 + offset * 14
        out.append(
            f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 20}" y2="{y}" stroke="{colour}" stroke-width="2"'
            f"{_dashes(dashes)}/>"
            f'<text x="{legend_x + 25}" y="{y + 4}">{name} per slice</text>'
        )
    if references:
        y = top + plot_h - 54 + len(SERIES) * 14
        out.append(
            f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 20}" y2="{y}" stroke="#999" stroke-dasharray="6 4"/>'
            f'<text x="{legend_x + 25}" y="{y + 4}">reference run (seed 001, 100 min), not this run</text>'
        )
    if not points:
        out.append(f'<text x="{width / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle">no samples</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
