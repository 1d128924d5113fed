"""The soak's figures as text, sans I/O: the seed's CSV, a readable table beside the seed's run, the ``--out`` JSON.

A figure that was not observed (the lag of a window in which no record reached the receiver, the queue
maximum of a window without a queue sample) is an empty CSV field, ``-`` in the table and ``null`` in
the JSON: never a 0 that would read as "no lag".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spl.soak.figures import QueueSample, RecordSample, WindowFigures
from spl.soak.plan import Window

__all__ = [
    "CSV_HEADER",
    "REFERENCE_NOTE",
    "SEED_REFERENCE",
    "csv_line",
    "format_csv",
    "format_duration_min",
    "format_table",
    "report_document",
]

CSV_HEADER = (
    "window,duration_min,records_emitted,records_synced,sync_lag_p50_ms,sync_lag_p99_ms,reconcile_queue_max,errors"
)


def format_duration_min(minutes: float) -> str:
    """``60`` for whole minutes, else up to three decimals (``0.5``, ``0.025``)."""
    text = f"{minutes:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _field(value: int | None) -> str:
    """A CSV field: the number, or nothing at all when it was not observed (never a 0 that reads as a figure)."""
    return "" if value is None else str(value)


def csv_line(row: WindowFigures) -> str:
    """One window as a line of the seed's CSV; unobserved lags and queue maxima are empty fields."""
    return ",".join(
        (
            row.window,
            format_duration_min(row.duration_min),
            str(row.records_emitted),
            str(row.records_synced),
            _field(row.sync_lag_p50_ms),
            _field(row.sync_lag_p99_ms),
            _field(row.reconcile_queue_max),
            str(row.errors),
        )
    )


def format_csv(rows: Sequence[WindowFigures]) -> str:
    """The seed's CSV: the exact header, then one line per window; ends with a newline."""
    return "\n".join([CSV_HEADER, *(csv_line(row) for row in rows)]) + "\n"


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


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


#: What the ``ref`` columns of the table are, printed under it: a reader who never saw the seed knows.
REFERENCE_NOTE = "ref = the reference run of seed 001 (100 minutes at 9.2 records/s), not this run"


def format_table(rows: Sequence[WindowFigures], reference: Sequence[WindowFigures] = SEED_REFERENCE) -> str:
    """A readable table: our figures per window, with the reference run's p50/p99/queue beside them (named
    as such on a last line, :data:`REFERENCE_NOTE`)."""
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
        "| ref p50",
        "ref p99",
        "ref queue",
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
                _cell(row.sync_lag_p50_ms),
                _cell(row.sync_lag_p99_ms),
                _cell(row.reconcile_queue_max),
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
    lines.append(REFERENCE_NOTE)
    return "\n".join(lines) + "\n"


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
