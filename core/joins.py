"""Join predicates: when does a parent thread close, given how its sub-threads closed (issue 12, seed 003).

Seed 003 ("Fork and merge"): "The join predicate in the parent INTEND decides when the parent itself should close —
all (every child), any (first accept), k_of_n, or an arbitrary CEL expression." The joiner actor
(``spl.actors.joiner``) calls :func:`decide` each time a child closes and writes what :func:`synthesis_body` and
:func:`closing_body` return; this module is the pure decision, with no I/O, so the same records give the same
decision on every instance and after every restart.

Wire forms of a parent INTEND's ``body["join"]`` (:func:`parse_join`; :func:`join_wire` gives the canonical one):

==============================================  ==============================================================
absent, ``null``, ``"all"``, ``{"mode": "all"}``  every child accepted
``"any"``, ``{"mode": "any"}``                  the first child accepted
``{"mode": "k_of_n", "k": 2}``, ``"k_of_n:2"``  at least k children accepted
``{"mode": "cel", "expr": "…"}``, ``"cel:…"``   a CEL expression over the outcomes (``spl.core.cel``)
==============================================  ==============================================================

A child is *accepted* when it closed ``done``, *rejected* when it closed ``failed`` or ``cancelled``, and *open*
otherwise — including an outcome whose status is none of those three (a peer's record may say anything): it
neither satisfies nor rejects, so an unknown status can delay a join but never close a parent wrongly.

Verdicts: ``pending`` (wait for more closes), ``satisfied`` (the joiner closes the parent as done) and
``unsatisfiable`` (the predicate can no longer hold: the joiner closes the parent as failed). A parent with no
children yet is always pending. ``all``, ``any`` and ``k_of_n`` are monotone: once satisfied or unsatisfiable, more
closes never change the verdict. A CEL expression is whatever its author wrote: the joiner acts on the first
verdict that is not pending, so "false while some child is open" is pending, and "false with every child closed",
an evaluation error or an exhausted step budget is unsatisfiable. The CEL variables:

- ``children``: a list, in fork order, of ``{"thread": str, "status": "done"|"failed"|"cancelled"|"open",
  "result": str or null}``, one per distinct child;
- ``accepted``, ``rejected``, ``open``, ``total``: the counts (ints).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from spl.core import cel
from spl.core.errors import InvalidRequest, SplError

__all__ = [
    "ACCEPTED",
    "CEL_VARIABLES",
    "CLOSED_KIND",
    "FAILED_KIND",
    "JOIN_KINDS",
    "MAX_EXPRESSION",
    "MAX_K",
    "REJECTED",
    "SYNTHESIS_KIND",
    "VERDICTS",
    "ChildOutcome",
    "InvalidJoin",
    "JoinDecision",
    "JoinPredicate",
    "closing_body",
    "decide",
    "join_wire",
    "parse_join",
    "synthesis_body",
]

JOIN_KINDS = ("all", "any", "k_of_n", "cel")
# The body kinds the joiner writes on a parent (spec §2.10 grammar: the kernel's own core scope, versioned).
SYNTHESIS_KIND = "core.join.child_closed.v1"
CLOSED_KIND = "core.join.closed.v1"
FAILED_KIND = "core.join.failed.v1"
VERDICTS = ("pending", "satisfied", "unsatisfiable")
ACCEPTED = frozenset({"done"})
REJECTED = frozenset({"failed", "cancelled"})
CEL_VARIABLES = ("children", "accepted", "rejected", "open", "total")
MAX_EXPRESSION = cel.MAX_EXPRESSION  # characters of a CEL join
MAX_K = 1_000_000
MAX_REASON = 300  # characters of a decision's reason
MAX_SUMMARY_RESULT = 200  # characters of a child's result quoted in a synthesis summary

_ACCEPTED_FORMS = (
    'a join is "all", "any", {"mode": "k_of_n", "k": N} (or "k_of_n:N"), or {"mode": "cel", "expr": "..."} '
    '(or "cel:EXPR"), with N a whole number from 1 to 1000000 and EXPR a CEL expression of at most 1024 characters'
)
_K_SHORTHAND = re.compile(r"k_of_n:([0-9]{1,7})")


class InvalidJoin(InvalidRequest):
    """A join predicate that is not one of the accepted forms; the message names them."""

    code = "INVALID_JOIN"


class JoinPredicate(msgspec.Struct, frozen=True):
    """A parsed join: ``mode`` is one of :data:`JOIN_KINDS`; ``k`` only for k_of_n, ``expr`` only for cel."""

    mode: str
    k: int | None = None
    expr: str | None = None


class ChildOutcome(msgspec.Struct, frozen=True):
    """How one child closed: ``status`` "done" | "failed" | "cancelled"; ``closer`` is its closing record's id."""

    thread: str
    status: str
    result: str | None = None
    closer: str | None = None


class JoinDecision(msgspec.Struct, frozen=True):
    """The verdict over the children so far, their counts, and one human line that says why."""

    verdict: str
    accepted: int
    rejected: int
    open: int
    total: int
    reason: str


def _invalid(what: str) -> InvalidJoin:
    return InvalidJoin(f"invalid join: {what}; {_ACCEPTED_FORMS}")


def _k(value: object) -> int:
    if type(value) is not int or not 1 <= value <= MAX_K:
        raise _invalid(f"k must be a whole number from 1 to {MAX_K}")
    return value


def _expression(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("a cel join needs a non-empty expression")
    if len(value) > MAX_EXPRESSION:
        raise _invalid(f"the expression has {len(value)} characters, more than {MAX_EXPRESSION}")
    try:
        _compiled(value)
    except cel.CelError as exc:
        raise InvalidJoin(f"invalid join expression: {exc.message}") from None
    return value


def parse_join(value: object) -> JoinPredicate:
    """The predicate a parent INTEND's ``body["join"]`` names (``None`` or absent: ``all``).

    A CEL expression is compiled here, so a bad one is refused when the parent is written, not when its first
    child closes. Total: any JSON value either parses or raises :class:`InvalidJoin`.

    Raises:
        InvalidJoin: anything but the accepted forms (see the module docstring).
    """
    if value is None:
        return JoinPredicate("all")
    if isinstance(value, str):
        if value in ("all", "any"):
            return JoinPredicate(value)
        shorthand = _K_SHORTHAND.fullmatch(value)
        if shorthand:
            return JoinPredicate("k_of_n", k=_k(int(shorthand.group(1))))
        if value.startswith("cel:"):
            return JoinPredicate("cel", expr=_expression(value[4:]))
        if value in ("k_of_n", "cel"):
            raise _invalid(f"{value!r} needs its parameter")
        raise _invalid(f"unknown join {value[:40]!r}")
    if isinstance(value, dict):
        mode = value.get("mode")
        allowed = {"all": {"mode"}, "any": {"mode"}, "k_of_n": {"mode", "k"}, "cel": {"mode", "expr"}}
        if not isinstance(mode, str) or mode not in allowed:
            raise _invalid("the object's mode must be one of all, any, k_of_n, cel")
        extra = sorted(str(key)[:40] for key in value if key not in allowed[mode])
        if extra:
            raise _invalid(f"a {mode} join has no field {extra[0]!r}")
        if mode == "k_of_n":
            return JoinPredicate("k_of_n", k=_k(value.get("k")))
        if mode == "cel":
            return JoinPredicate("cel", expr=_expression(value.get("expr")))
        return JoinPredicate(mode)
    raise _invalid(f"a join is a string or an object, not {type(value).__name__}")


def join_wire(predicate: JoinPredicate) -> object:
    """The canonical wire form: ``parse_join(join_wire(p)) == p`` for every predicate ``parse_join`` returns."""
    if predicate.mode == "k_of_n":
        return {"mode": "k_of_n", "k": predicate.k}
    if predicate.mode == "cel":
        return {"mode": "cel", "expr": predicate.expr}
    return predicate.mode


@functools.lru_cache(maxsize=128)
def _compiled(expr: str) -> cel.Program:
    """Compile once per distinct expression: the joiner decides a parent's join at every child close."""
    return cel.compile_program(expr, declared=CEL_VARIABLES)


def _unique(children: Sequence[str]) -> list[str]:
    """The children in fork order, each once (a parent may name a child in two INTENDs)."""
    return list(dict.fromkeys(children))


def _status(outcome: ChildOutcome | None) -> str:
    if outcome is None:
        return "open"
    if outcome.status in ACCEPTED or outcome.status in REJECTED:
        return outcome.status
    return "open"  # unknown: undecided, see the module docstring


def _line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def decide(predicate: JoinPredicate, children: Sequence[str], outcomes: Mapping[str, ChildOutcome]) -> JoinDecision:
    """The join's verdict over ``children`` (fork order) given the ``outcomes`` of those closed so far.

    Outcomes of threads that are not among ``children`` are ignored. Never raises for any predicate
    :func:`parse_join` returns (a CEL error is an ``unsatisfiable`` verdict with the error as its reason).
    """
    threads = _unique(children)
    statuses = [_status(outcomes.get(thread)) for thread in threads]
    accepted = sum(1 for status in statuses if status in ACCEPTED)
    rejected = sum(1 for status in statuses if status in REJECTED)
    still_open = len(threads) - accepted - rejected
    if not threads:
        name, why = "pending", "no sub-thread forked yet"
    elif predicate.mode == "cel":
        name, why = _decide_cel(predicate.expr or "", threads, statuses, outcomes, accepted, rejected)
    else:
        name, why = _decide_counting(predicate, threads, statuses, accepted, still_open)
    counts = f"{accepted} of {len(threads)} accepted, {rejected} rejected, {still_open} open"
    return JoinDecision(
        name, accepted, rejected, still_open, len(threads), _line(f"{predicate.mode}: {why} ({counts})")
    )


def _decide_counting(
    predicate: JoinPredicate, threads: list[str], statuses: list[str], accepted: int, still_open: int
) -> tuple[str, str]:
    """all, any and k_of_n: (verdict, why), from the counts alone."""
    if predicate.mode == "all":
        for thread, status in zip(threads, statuses, strict=True):
            if status in REJECTED:
                return "unsatisfiable", f"child {thread} {status}"
        if still_open == 0:
            return "satisfied", "every child accepted"
        return "pending", f"waiting for {still_open} more"
    if predicate.mode == "any":
        for thread, status in zip(threads, statuses, strict=True):
            if status in ACCEPTED:
                return "satisfied", f"child {thread} accepted"
        if still_open == 0:
            return "unsatisfiable", "every child closed and none accepted"
        return "pending", "waiting for one acceptance"
    if predicate.mode == "k_of_n" and predicate.k is not None:
        k = predicate.k
        if accepted >= k:
            return "satisfied", f"{accepted} accepted, k = {k}"
        if accepted + still_open < k:
            return "unsatisfiable", f"at most {accepted + still_open} can accept, k = {k}"
        return "pending", f"{k - accepted} more needed, k = {k}"
    return "unsatisfiable", f"not a join this instance knows ({_ACCEPTED_FORMS})"


def _decide_cel(
    expr: str,
    threads: list[str],
    statuses: list[str],
    outcomes: Mapping[str, ChildOutcome],
    accepted: int,
    rejected: int,
) -> tuple[str, str]:
    """cel: (verdict, why) from the expression over the children; an error of any kind is unsatisfiable."""
    children = []
    for thread, status in zip(threads, statuses, strict=True):
        outcome = outcomes.get(thread)
        result = outcome.result if outcome is not None and status != "open" else None
        children.append({"thread": thread, "status": status, "result": result if isinstance(result, str) else None})
    still_open = len(threads) - accepted - rejected
    variables: dict[str, object] = {
        "children": children,
        "accepted": accepted,
        "rejected": rejected,
        "open": still_open,
        "total": len(threads),
    }
    try:
        value = _compiled(expr).evaluate(variables)
    except cel.CelError as exc:
        return "unsatisfiable", exc.message
    if type(value) is not bool:
        return "unsatisfiable", f"the expression gave {cel.type_name(value)}, not a bool"
    if value:
        return "satisfied", "the expression is true"
    if still_open:
        return "pending", "the expression is false while children are open"
    return "unsatisfiable", "the expression is false with every child closed"


def synthesis_body(child: ChildOutcome) -> dict[str, Any]:
    """The KNOW the joiner writes on the parent when ``child`` closes: seed 003's "child X completed with result Y"."""
    result = child.result
    quoted = None
    if isinstance(result, str) and result.strip():
        quoted = " ".join(result.split())
        if len(quoted) > MAX_SUMMARY_RESULT:
            quoted = quoted[: MAX_SUMMARY_RESULT - 3] + "..."
    if child.status == "done":
        summary = f"child {child.thread} completed" + (f" with result {quoted}" if quoted else "")
    elif child.status == "failed":
        summary = f"child {child.thread} failed" + (f": {quoted}" if quoted else "")
    elif child.status == "cancelled":
        summary = f"child {child.thread} was cancelled" + (f": {quoted}" if quoted else "")
    else:
        summary = f"child {child.thread} closed as {child.status[:32]!r}" + (f": {quoted}" if quoted else "")
    return {
        "kind": SYNTHESIS_KIND,
        "_v": 1,
        "child": child.thread,
        "outcome": child.status,
        "result": result,
        "child_closer": child.closer,
        "summary": summary,
    }


def closing_body(predicate: JoinPredicate, decision: JoinDecision, parent_intend: str) -> dict[str, Any]:
    """The KNOW that closes the parent: ``fulfills`` its INTEND when satisfied, a rejecting ``fail`` otherwise.

    The thread fold reads ``verdict: "reject"`` as a close (cancelled) and the task fold reads
    ``task_event: "fail"`` as failed, so both folds see the parent closed.

    Raises:
        SplError: ``decision`` is pending (a bug in the caller: a pending join closes nothing).
    """
    if decision.verdict == "satisfied":
        return {
            "kind": CLOSED_KIND,
            "_v": 1,
            "fulfills": parent_intend,
            "summary": f"join satisfied: {decision.reason}",
            "join": join_wire(predicate),
            "accepted": decision.accepted,
            "total": decision.total,
        }
    if decision.verdict == "unsatisfiable":
        return {
            "kind": FAILED_KIND,
            "_v": 1,
            "verdict": "reject",
            "task_event": "fail",
            "reason": decision.reason,
            "join": join_wire(predicate),
        }
    raise SplError(f"closing_body called with a {decision.verdict!r} join decision; see the daemon log")
