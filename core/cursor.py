"""Change-feed cursors: opaque strings built on the source's ``sequence`` (spec §15.6).

A cursor ``s1.<n>`` means "every record of this thread with sequence ≤ n has been
delivered". Sequences are strictly increasing per instance, so unlike a (clock, id)
cursor no same-clock record can ever be skipped. Clients must treat cursors as opaque.

The continuous feed's SSE ``id:`` is the bare sequence ``<n>`` (spec §15.11), and a
receiver hands back whatever id it last saw as ``since`` (spec §15.20: it never parses a
peer's cursor), so ``<n>`` is accepted as the same cursor as ``s1.<n>``.
"""

from __future__ import annotations

from spl.core.errors import InvalidRequest

__all__ = ["START", "decode_cursor", "encode_cursor"]

_PREFIX = "s1."
START = ""  # the empty cursor: from the beginning of the thread
MAX_SEQUENCE = 2**63 - 1


def encode_cursor(sequence: int) -> str:
    return f"{_PREFIX}{sequence}" if sequence > 0 else START


def decode_cursor(cursor: str | None) -> int:
    """The sequence a cursor stands for (0 = start); a 400 naming the fix for anything else."""
    if cursor is None or cursor == "" or cursor == "0":
        return 0
    if cursor.startswith(_PREFIX):
        digits = cursor[len(_PREFIX) :]
    elif cursor.isascii() and cursor.isdigit():
        digits = cursor  # an SSE event id of the continuous feed
    else:
        raise InvalidRequest(
            f"invalid cursor {cursor[:40]!r}: pass back the next_cursor of a previous page, or omit it to start",
            code="INVALID_CURSOR",
        )
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19 or int(digits) > MAX_SEQUENCE:
        raise InvalidRequest(f"invalid cursor {cursor[:40]!r}: not a cursor this daemon issued", code="INVALID_CURSOR")
    return int(digits)
