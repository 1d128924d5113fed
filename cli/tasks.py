"""``spl task …``: STUB — filled in by issue 12's task work."""

from __future__ import annotations

import typer

__all__ = ["task_app"]

task_app = typer.Typer(help="Tasks: threads opened by a task INTEND (seed 003).", no_args_is_help=True)
