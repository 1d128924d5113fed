"""``--out DIR``: the run's CSV, its JSON document (raw lag samples, figures, config) and its lag plot, on disk."""

from __future__ import annotations

import json
from pathlib import Path

from spl.soak.plot import render_svg
from spl.soak.report import format_csv, report_document
from spl.soak.result import SoakResult, result_config

__all__ = ["write_outputs"]


def plot_title(result: SoakResult) -> str:
    config = result.config
    title = f"spl federation soak: {config.pairs} {config.mode} pair(s), {config.rate:g} records/s steady per pair"
    title += ", faults" if config.faults else ""
    return title + (f" (partial: stopped by {result.interrupted})" if result.interrupted else "")


def write_outputs(result: SoakResult, out: Path) -> list[Path]:
    """Write soak.csv, soak.json and soak-lag.svg into ``out`` (made if missing); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    windows = result.config.windows
    csv_path, json_path, svg_path = out / "soak.csv", out / "soak.json", out / "soak-lag.svg"
    csv_path.write_text(format_csv(result.rows))
    resources = {
        "resources_columns": ["t_s", "role", "rss_kib", "fds", "sockets"],
        "resources": [[round(r.t, 2), r.role, r.rss_kib, r.fds, r.sockets] for r in result.resources],
        "baseline": {role: [r.rss_kib, r.fds, r.sockets] for role, r in result.baseline.items()},
        "missing": result.missing,
    }
    document = report_document(
        result_config(result),
        result.rows,
        windows,
        result.records,
        result.queue,
        result.events,
        result.problems,
        resources,
    )
    json_path.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    points = [(r.t, r.lag_ms) for r in result.records if r.lag_ms is not None]
    emitted = [r.t for r in result.records]
    svg_path.write_text(
        render_svg(
            points, windows, title=plot_title(result), events=result.events, emitted=emitted, errors=result.errors
        )
    )
    return [csv_path, json_path, svg_path]
