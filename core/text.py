"""Making untrusted text safe to show on one line of a log or a terminal. Pure, stdlib only.

Anything a peer or a client sends can end up in a log line, an error message or a CLI's
output: an error ``message`` from a peer, a thread name, a token label. Printed as is, such
text can forge whole log lines (a ``\\n`` followed by ``CRITICAL …``), drive the operator's
terminal with ANSI escapes (``\\x1b[…``), reorder what a reader sees with bidi overrides, or
hide text with invisible characters. :func:`printable` turns it into one inert line.
"""

from __future__ import annotations

__all__ = ["printable"]

ELLIPSIS = "…"


def printable(value: object, limit: int = 200) -> str:
    """``value`` as a single safe line of at most ``limit`` characters (plus ``…`` when cut).

    Every character Python does not consider printable is replaced by an escape that
    spells its code point: control characters (C0 including ``\\n``, ``\\r``, ``\\t`` and
    ``\\x1b``, DEL, C1) as ``\\xNN``; lone surrogates, line and paragraph separators, bidi
    overrides and isolates, zero-width and other format characters as ``\\uNNNN``; astral
    ones as ``\\UNNNNNNNN``. Ordinary text in any script, and the plain space, are kept.
    An escape is never cut in half by the limit. A value that is not a ``str`` is shown
    through ``repr`` (and escaped the same way); a ``repr`` that raises is replaced by a
    placeholder, because a log call must never fail on what it logs.
    """
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    limit = max(limit, 0)
    # Every input character yields at least one output character, so looking at one more
    # than the limit is enough to know both the result and whether it was cut.
    head = text[: limit + 1]
    if head.isprintable():  # the common case: nothing to escape
        return head if len(head) <= limit else head[:limit] + ELLIPSIS
    pieces: list[str] = []
    used = 0
    for char in head:
        piece = char if char.isprintable() else _escape(char)
        if used + len(piece) > limit:
            return "".join(pieces) + ELLIPSIS
        pieces.append(piece)
        used += len(piece)
    # Everything fitted, so ``head`` was the whole text (an extra character would not have fitted).
    return "".join(pieces)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
