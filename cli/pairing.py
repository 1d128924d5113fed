"""``spl pair``: device pairing (issue 14). Placeholder group, registered in cli/main.py."""

from __future__ import annotations

import typer

__all__ = ["pair_app"]

pair_app = typer.Typer(help="Pair a second device with this instance: a one-time code, then its own token.")
