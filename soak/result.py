"""A finished run's result: the per-window figures, the verdict, notes for the reader, and the raw samples.

:func:`build_result` is pure: it reads the run's :class:`~spl.soak.ledger.Ledger` and config, nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spl.soak.config import SoakConfig
from spl.soak.figures import (
    QueueSample,
    RecordSample,
    WindowFigures,
    aggregate,
    error_deltas_by_window,
    error_points,
    lag_ms,
    problems,
    queue_max_by_window,
)
from spl.soak.ledger import Ledger
from spl.soak.plan import emits_due
from spl.soak.procfs import ResourceSample

__all__ = ["MISSING_LISTED", "SoakResult", "build_result", "result_config"]

MISSING_LISTED = 1000  # record ids named in ``missing`` at most


@dataclass
class SoakResult:
    config: SoakConfig
    rows: list[WindowFigures]
    records: list[RecordSample]
    queue: list[QueueSample]
    events: list[tuple[float, str]]
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    started_at: float = 0.0  # wall time of run time 0
    drain_seconds: float = 0.0
    emit_failures: int = 0
    resources: list[ResourceSample] = field(default_factory=list)
    baseline: dict[str, ResourceSample] = field(default_factory=dict)  # before any pair existed
    traffic: list[tuple[float, int, int]] = field(default_factory=list)  # (t, bytes to source, bytes from source)
    missing: dict[str, str] = field(default_factory=dict)  # record id → why it counts as not synced (first 1,000)
    errors: list[tuple[float, int]] = field(default_factory=list)  # (t, count): pair errors and never-synced records
    interrupted: str | None = None  # "SIGTERM at 31.2 s": a partial result of a run a signal stopped

    @property
    def passed(self) -> bool:
        return not self.problems


def build_result(config: SoakConfig, ledger: Ledger, *, started_at: float, drain_seconds: float) -> SoakResult:
    """The figures, problems and notes of a run from what it observed."""
    windows = config.windows
    records = [
        RecordSample(
            e.t,
            e.window,
            lag_ms(e.source_committed, ledger.synced[record_id])
            if record_id in ledger.synced and e.source_committed is not None
            else None,
        )
        for record_id, e in ledger.emitted.items()
    ]
    missing: dict[str, str] = {}
    for record_id, e in ledger.emitted.items():
        if len(missing) >= MISSING_LISTED:
            break
        if e.source_committed is None:
            missing[record_id] = "acknowledged by the source, never found in its records"
        elif record_id not in ledger.synced:
            missing[record_id] = "on the source, not on the receiver"
    queue_max = queue_max_by_window(windows, ledger.queue_samples)
    pair_errors = error_deltas_by_window(windows, ledger.error_samples)
    targets = [
        config.pairs * (emits_due(windows, config.rate, w.end) - emits_due(windows, config.rate, w.start))
        for w in windows
    ]
    rows = aggregate(windows, records, queue_max, pair_errors, targets)
    found = problems(rows)
    if not ledger.final_errors_read:
        found.append("the receiver did not answer GET /v1/sync/pairs after the drain: pair-level errors unknown")
    notes: list[str] = []
    for row, skipped in zip(rows, ledger.skipped_by_window, strict=True):
        if row.target_emits and row.records_emitted < 0.95 * row.target_emits - 1:
            notes.append(
                f"{row.window}: emitted {row.records_emitted} of {row.target_emits:.0f} scheduled "
                f"({row.records_emitted / row.target_emits:.0%}; {skipped} skipped because the source fell "
                "behind): the source's emit path is the limit, not the pair"
            )
    if any(row.pair_errors for row in rows):
        for pair_id, error in sorted(ledger.last_errors.items()):
            notes.append(f"pair {pair_id}: last error {error}")
    if ledger.unconfirmed:
        notes.append(f"{ledger.unconfirmed} pushed record(s) were never seen on the source (counted as not synced)")
    if ledger.emit_failures:
        notes.append(f"{len(ledger.emit_failures)} emit(s) failed after retries (first: {ledger.emit_failures[0]})")
    if drain_seconds >= config.drain_timeout:
        notes.append(f"the drain hit its {config.drain_timeout:.0f}s limit (--drain-timeout)")
    unreached = [row.window for row in rows if row.sync_lag_p50_ms is None]
    if unreached:
        notes.append(
            f"no record of {', '.join(unreached)} reached the receiver: its lag fields are empty (unknown, not 0 ms)"
        )
    unsampled = [row.window for row in rows if row.reconcile_queue_max is None]
    if unsampled:
        notes.append(
            f"no reconcile-queue sample fell in {', '.join(unsampled)} (sampling backs off when the receiver is "
            "slow to answer): its reconcile_queue_max is empty (unknown, not 0)"
        )
    never_synced = [(record.t, 1) for record in records if record.lag_ms is None]
    return SoakResult(
        config=config,
        rows=rows,
        records=records,
        queue=ledger.queue_samples,
        events=sorted(ledger.events),
        problems=found,
        notes=notes,
        started_at=started_at,
        drain_seconds=drain_seconds,
        emit_failures=len(ledger.emit_failures),
        resources=ledger.resources,
        baseline=ledger.baseline,
        traffic=ledger.traffic,
        missing=missing,
        errors=sorted(error_points(ledger.error_samples) + never_synced),
    )


def result_config(result: SoakResult) -> dict[str, Any]:
    """The config plus run facts, for the ``--out`` JSON."""
    return {
        **result.config.describe(),
        "windows_seconds": [w.seconds for w in result.config.windows],
        "started_at": result.started_at,
        "drain_seconds": round(result.drain_seconds, 3),
        "emit_failures": result.emit_failures,
        "interrupted": result.interrupted,
        "notes": result.notes,
        "config_raw": {k: v for k, v in asdict(result.config).items() if k not in ("windows", "peer_token")},
    }
