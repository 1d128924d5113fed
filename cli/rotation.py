"""``spl identity rotate`` (issue 14): a new signing key that keeps every pair.

Placeholder, registered in cli/main.py.
"""

from __future__ import annotations

import typer

__all__ = ["rotate"]


def rotate() -> None:
    """Rotate this instance's signing key.

    Example: spl identity rotate
    """
    raise typer.Exit(1)
