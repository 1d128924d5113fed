"""Output for read commands: a readable table by default, ``-o json`` for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer

__all__ = ["OutputFormat", "emit_json", "table"]

OutputFormat = str  # "text" | "json"


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print left-aligned columns; long cells are kept whole (no truncation surprises)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            typer.echo("  ".join("-" * width for width in widths))
