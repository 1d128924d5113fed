"""The ``spl`` Typer app and the options every command shares, alone in their module.

``spl.cli.main`` registers every command and group on :data:`app` in one place; command modules
import only the options from here. Nothing here imports a command module, so no import runs back
up (``tests/test_layers.py`` checks there is no cycle).

This module is on every command's path, ``spl version`` included: it imports typer and nothing heavy.
"""

from __future__ import annotations

import typer

__all__ = ["OUTPUT", "URL", "app"]

app = typer.Typer(
    name="spl",
    help="spl: a Syncropel daemon (steward) and its control commands.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OUTPUT = typer.Option("text", "-o", "--output", help="Output format: text or json.")
URL = typer.Option(
    None, "--url", help="Daemon URL (default: $SPL_SERVE_URL, else this home's running daemon; never guessed)."
)
