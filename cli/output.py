"""Output for read commands: a readable table by default, ``-o json`` for machines.

Whatever the CLI prints comes mostly from a daemon, and through it from clients and peers:
actors, thread ids, record bodies, token labels, a peer's error message. In text output
every such value goes through :func:`safe` (``spl.core.text.printable``), so an actor
such as ``"bob\\x1b]0;pwned\\x07\\nCRITICAL forged"`` prints as one inert cell instead of
retitling the terminal and forging a line; :func:`table` does it for every cell.
``-o json`` stays exact JSON: :func:`emit_json` spells the characters a terminal would act
on as ``\\uXXXX`` escapes, which decode to the very same strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import typer

from spl.core.text import printable

__all__ = ["CELL_LIMIT", "OutputFormat", "emit_json", "json_text", "safe", "table"]

OutputFormat = str  # "text" | "json"

# Long enough for any legal field (actors are at most 512 characters, threads 256) even
# with a few escapes; a longer value from a misbehaving daemon is cut with "…".
CELL_LIMIT = 2048

# What json.dumps(ensure_ascii=False) leaves raw although it is not printable text: DEL, C1
# controls, and the non-ASCII characters str.isprintable refuses (bidi overrides, zero-width
# and other format characters, line/paragraph separators, lone surrogates, unassigned code
# points). C0 controls never reach this: json.dumps escapes them itself.
_JSON_SUSPECT = re.compile(r"[^\n\x20-\x7e]")


def safe(value: object, limit: int = CELL_LIMIT) -> str:
    """``value`` as one inert line for a terminal (see :func:`spl.core.text.printable`).

    Plain text comes out unchanged, and so does ``None`` or a number (as ``f"{value}"``
    would print it); control, format and other non-printable characters come out as
    ``\\xNN`` / ``\\uNNNN`` escapes.
    """
    return printable(value if isinstance(value, str) else str(value), limit)


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # astral: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(value: Any) -> str:
    """``value`` as indented JSON that decodes to ``value`` and holds no character a terminal acts on."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    # Outside strings JSON text is ASCII, so every suspect character sits inside a string,
    # where its \\u escape means the same character.
    return _JSON_SUSPECT.sub(_json_escape, text)


def emit_json(value: Any) -> None:
    typer.echo(json_text(value))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print left-aligned columns; long cells are kept whole (no truncation surprises).

    Every cell goes through :func:`safe`: a cell is daemon data and must not move the
    cursor, recolour the terminal or start a line of its own.
    """
    cells = [[str(h) for h in headers]] + [["" if c is None else safe(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            typer.echo("  ".join("-" * width for width in widths))
