"""``spl debug …``: forensic tools (issue 11: ``thread-diff``)."""

from __future__ import annotations

import typer

__all__ = ["debug_app"]

debug_app = typer.Typer(
    help="Forensic tools: compare threads across snapshots, instances and peers.", no_args_is_help=True
)
