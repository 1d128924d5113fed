"""Change-feed cursors: opaque strings built on the source's ``sequence`` (spec §15.6).

A cursor ``s1.<n>`` means "every record of this thread with sequence ≤ n has been
delivered". Sequences are strictly increasing per instance, so unlike a (clock, id)
cursor no same-clock record can ever be skipped. Clients must treat cursors as opaque.

The continuous feed's SSE ``id:`` is the bare sequence ``<n>`` (spec §15.11), and a
receiver hands back whatever id it last saw as ``since`` (spec §15.20: it never parses a
peer's cursor), so ``<n>`` is accepted as the same cursor as ``s1.<n>``.

A filtered feed (a pull under a federation pair, or with ``target_namespace``: the consent
filter decides what each record becomes) issues ``f1.<n>.<policy>``: ``policy`` is the
version of the grants and pair settings the page was served under. When what applies to
the requester widens (a new L0 grant), the records already skipped or redacted under the
old policy must be offered again, so the source compares the cursor's policy with the
current one and starts the feed over when they differ (docs/federation-pairs.md, "Consent").
"""

from __future__ import annotations

from spl.core.errors import InvalidRequest, SplError

__all__ = ["START", "decode_any_cursor", "decode_cursor", "encode_cursor", "encode_policy_cursor"]

_PREFIX = "s1."
_POLICY_PREFIX = "f1."
START = ""  # the empty cursor: from the beginning of the thread
MAX_SEQUENCE = 2**63 - 1
MAX_POLICY = 2**63 - 1
_MAX_DIGITS = 19  # len(str(2**63 - 1)): a longer run of digits is out of range before int() reads it


def encode_cursor(sequence: int) -> str:
    return f"{_PREFIX}{sequence}" if sequence > 0 else START


def encode_policy_cursor(sequence: int, policy: int) -> str:
    """The cursor of a filtered page: ``f1.<sequence>.<policy>`` (kept even at sequence 0: the policy must travel).

    Raises:
        SplError: ``sequence`` or ``policy`` is outside 0..2^63-1 (a bug in the caller, not in a request).
    """
    if not 0 <= sequence <= MAX_SEQUENCE or not 0 <= policy <= MAX_POLICY:
        raise SplError(f"cannot encode a cursor for sequence {sequence} under policy {policy}: see the daemon log")
    return f"{_POLICY_PREFIX}{sequence}.{policy}"


def _invalid(cursor: str) -> InvalidRequest:
    return InvalidRequest(
        f"invalid cursor {cursor[:40]!r}: pass back the next_cursor of a previous page, or omit it to start",
        code="INVALID_CURSOR",
    )


def _number(digits: str, cursor: str, highest: int) -> int:
    """``digits`` as an int in 0..``highest``; a 400 for anything else (signs, spaces, non-ASCII digits, too many)."""
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_DIGITS or int(digits) > highest:
        raise InvalidRequest(f"invalid cursor {cursor[:40]!r}: not a cursor this daemon issued", code="INVALID_CURSOR")
    return int(digits)


def decode_cursor(cursor: str | None) -> int:
    """The sequence a cursor stands for (0 = start); a 400 naming the fix for anything else."""
    if cursor is None or cursor == "" or cursor == "0":
        return 0
    if cursor.startswith(_PREFIX):
        digits = cursor[len(_PREFIX) :]
    elif cursor.isascii() and cursor.isdigit():
        digits = cursor  # an SSE event id of the continuous feed
    else:
        raise _invalid(cursor)
    return _number(digits, cursor, MAX_SEQUENCE)


def decode_any_cursor(cursor: str | None) -> tuple[int, int | None]:
    """The sequence and policy of a cursor: ``(n, policy)`` for ``f1.<n>.<policy>``, ``(n, None)`` otherwise.

    ``s1.<n>``, a bare ``<n>`` and the empty cursor (``(0, None)``) decode as :func:`decode_cursor`
    does: a pull that switches from the plain feed to a filtered one (or whose token became
    bound to a pair) hands back a cursor without a policy, which the source treats as "no
    policy known" and starts over. Anything else is the same 400 ``INVALID_CURSOR``.
    """
    if cursor is None or not cursor.startswith(_POLICY_PREFIX):
        return decode_cursor(cursor), None
    sequence, dot, policy = cursor[len(_POLICY_PREFIX) :].partition(".")
    if not dot:
        raise _invalid(cursor)
    return _number(sequence, cursor, MAX_SEQUENCE), _number(policy, cursor, MAX_POLICY)
