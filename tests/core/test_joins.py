"""Join predicates: parsing every wire form, each predicate's table, and the bodies the joiner writes.

Seed 003 ("Fork and merge"): a parent closes when its join holds over its children's closes — all, any (first
accept), k_of_n, or a CEL expression. The joiner acts on the first verdict that is not pending, so the built-in
predicates must be monotone: once decided, more closes never change the verdict.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core import fold, tasks
from spl.core.errors import InvalidRequest, SplError
from spl.core.joins import (
    JOIN_KINDS,
    MAX_EXPRESSION,
    ChildOutcome,
    InvalidJoin,
    JoinDecision,
    JoinPredicate,
    closing_body,
    decide,
    join_wire,
    parse_join,
    synthesis_body,
)

ALL, ANY = JoinPredicate("all"), JoinPredicate("any")


def k_of_n(k: int) -> JoinPredicate:
    return JoinPredicate("k_of_n", k=k)


def cel(expr: str) -> JoinPredicate:
    return JoinPredicate("cel", expr=expr)


def outcomes(**statuses: str) -> dict[str, ChildOutcome]:
    return {
        thread: ChildOutcome(thread, status, f"result of {thread}", f"rec_{thread}")
        for thread, status in statuses.items()
    }


# ------------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (None, ALL),
        ("all", ALL),
        ("any", ANY),
        ({"mode": "all"}, ALL),
        ({"mode": "any"}, ANY),
        ({"mode": "k_of_n", "k": 2}, k_of_n(2)),
        ("k_of_n:2", k_of_n(2)),
        ("k_of_n:1000000", k_of_n(1_000_000)),
        ({"mode": "cel", "expr": "accepted >= 2"}, cel("accepted >= 2")),
        ("cel:accepted >= 2", cel("accepted >= 2")),
        ("cel:children.all(c, c.status == 'done')", cel("children.all(c, c.status == 'done')")),
    ],
)
def test_every_wire_form_parses(wire: object, expected: JoinPredicate) -> None:
    assert parse_join(wire) == expected


@pytest.mark.parametrize(
    ("wire", "fragment"),
    [
        ("ALL", "unknown join 'ALL'"),
        ("", "unknown join"),
        ("k_of_n", "needs its parameter"),
        ("cel", "needs its parameter"),
        ("k_of_n:0", "from 1 to"),
        ("k_of_n:-1", "unknown join"),
        ("k_of_n:2.5", "unknown join"),
        ("k_of_n: 2", "unknown join"),
        ("k_of_n:10000000", "unknown join"),
        ({"mode": "k_of_n"}, "k must be"),
        ({"mode": "k_of_n", "k": "2"}, "k must be"),
        ({"mode": "k_of_n", "k": True}, "k must be"),
        ({"mode": "k_of_n", "k": 2.0}, "k must be"),
        ({"mode": "k_of_n", "k": 1_000_001}, "k must be"),
        ({"mode": "all", "k": 2}, "has no field 'k'"),
        ({"mode": "cel", "expr": "true", "extra": 1}, "has no field 'extra'"),
        ({"mode": "first"}, "mode must be"),
        ({}, "mode must be"),
        ({"mode": "cel"}, "non-empty expression"),
        ({"mode": "cel", "expr": "  "}, "non-empty expression"),
        ("cel:", "non-empty expression"),
        ("cel:" + "1" * (MAX_EXPRESSION + 1), "more than 1024"),
        ("cel:accepted >=", "CEL syntax error"),
        ("cel:acepted > 1", "undeclared variable 'acepted'"),
        ("cel:x.matches('a')", "unknown function"),
        (2, "not int"),
        (["all"], "not list"),
        (True, "not bool"),
    ],
)
def test_invalid_joins_are_refused_naming_the_accepted_forms(wire: object, fragment: str) -> None:
    with pytest.raises(InvalidJoin) as caught:
        parse_join(wire)
    error = caught.value
    assert fragment in error.message
    assert isinstance(error, InvalidRequest) and error.status == 400 and error.code == "INVALID_JOIN"
    if "CEL" not in error.message and "undeclared" not in error.message and "unknown function" not in error.message:
        assert '"all", "any"' in error.message and "k_of_n" in error.message and "cel" in error.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["all", "any", "k_of_n", "cel", "k_of_n:3", "cel:open == 0", "cel:(", "k_of_n:0"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["mode", "k", "expr", "x"]) | st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_parse_join_is_total(value: Any) -> None:
    try:
        predicate = parse_join(value)
    except InvalidJoin:
        return
    assert predicate.mode in JOIN_KINDS
    assert parse_join(join_wire(predicate)) == predicate


predicates = st.one_of(
    st.just(ALL),
    st.just(ANY),
    st.integers(1, 1_000_000).map(k_of_n),
    st.sampled_from(["accepted >= 2", "open == 0 && rejected == 0", "children.exists(c, c.status == 'done')"]).map(cel),
)


@given(predicates)
def test_join_wire_is_the_inverse_of_parse_join(predicate: JoinPredicate) -> None:
    assert parse_join(join_wire(predicate)) == predicate


def test_the_canonical_wire_forms() -> None:
    assert join_wire(ALL) == "all" and join_wire(ANY) == "any"
    assert join_wire(k_of_n(2)) == {"mode": "k_of_n", "k": 2}
    assert join_wire(cel("open == 0")) == {"mode": "cel", "expr": "open == 0"}


# ---------------------------------------------------------------------------------------------------- the tables

CHILDREN = ["th_a", "th_b", "th_c"]
TABLE = [
    # predicate, closes so far, verdict
    (ALL, {}, "pending"),
    (ALL, {"th_a": "done"}, "pending"),
    (ALL, {"th_a": "done", "th_b": "done"}, "pending"),
    (ALL, {"th_a": "done", "th_b": "done", "th_c": "done"}, "satisfied"),
    (ALL, {"th_b": "failed"}, "unsatisfiable"),
    (ALL, {"th_a": "done", "th_c": "cancelled"}, "unsatisfiable"),
    (ANY, {}, "pending"),
    (ANY, {"th_a": "failed"}, "pending"),
    (ANY, {"th_a": "failed", "th_c": "done"}, "satisfied"),
    (ANY, {"th_a": "failed", "th_b": "cancelled", "th_c": "failed"}, "unsatisfiable"),
    (k_of_n(2), {"th_a": "done"}, "pending"),
    (k_of_n(2), {"th_a": "done", "th_b": "failed"}, "pending"),
    (k_of_n(2), {"th_a": "done", "th_c": "done"}, "satisfied"),
    (k_of_n(2), {"th_a": "failed", "th_b": "failed"}, "unsatisfiable"),
    (k_of_n(3), {"th_a": "done", "th_b": "done", "th_c": "done"}, "satisfied"),
    (k_of_n(4), {}, "unsatisfiable"),  # k > n: can never hold
    (k_of_n(1), {"th_b": "done"}, "satisfied"),
    (cel("accepted >= 2"), {"th_a": "done"}, "pending"),
    (cel("accepted >= 2"), {"th_a": "done", "th_b": "done"}, "satisfied"),
    (cel("accepted >= 2"), {"th_a": "done", "th_b": "failed", "th_c": "failed"}, "unsatisfiable"),
    (cel("children.exists(c, c.result == 'result of th_b')"), {"th_b": "done"}, "satisfied"),
    (cel("children[0].status == 'open'"), {}, "satisfied"),
    (cel("children.all(c, c.status != 'open') && rejected <= 1"), {"th_a": "failed", "th_b": "done"}, "pending"),
    (cel("1 / rejected == 1"), {}, "unsatisfiable"),  # an evaluation error: unsatisfiable, never raised
    (cel("accepted"), {}, "unsatisfiable"),  # not a bool
    (cel("[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, "
         "[1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, true)))))"), {}, "unsatisfiable"),  # budget
]  # fmt: skip


@pytest.mark.parametrize(("predicate", "closed", "verdict"), TABLE)
def test_the_predicate_tables(predicate: JoinPredicate, closed: dict[str, str], verdict: str) -> None:
    decision = decide(predicate, CHILDREN, outcomes(**closed))
    assert decision.verdict == verdict, decision.reason
    assert decision.total == 3
    assert decision.accepted + decision.rejected + decision.open == 3
    assert decision.reason.startswith(predicate.mode + ": ") and "\n" not in decision.reason


def test_reasons_say_why() -> None:
    assert "child th_b failed" in decide(ALL, CHILDREN, outcomes(th_a="done", th_b="failed")).reason
    assert "child th_c accepted" in decide(ANY, CHILDREN, outcomes(th_c="done")).reason
    assert "at most 1 can accept, k = 2" in decide(k_of_n(2), CHILDREN, outcomes(th_a="failed", th_b="failed")).reason
    assert "int" in decide(cel("accepted"), CHILDREN, {}).reason
    error = decide(cel("1 / rejected == 1"), CHILDREN, {})
    assert "division by zero" in error.reason
    budget = decide(cel(TABLE[-1][0].expr or ""), CHILDREN, {})
    assert "evaluation steps" in budget.reason


def test_no_children_is_always_pending() -> None:
    for predicate in (ALL, ANY, k_of_n(1), k_of_n(5), cel("true"), cel("1 / 0 == 1")):
        decision = decide(predicate, [], {})
        assert decision == JoinDecision("pending", 0, 0, 0, 0, decision.reason)
        assert "no sub-thread" in decision.reason


def test_duplicate_children_count_once() -> None:
    decision = decide(ALL, ["th_a", "th_b", "th_a"], outcomes(th_a="done", th_b="done"))
    assert (decision.verdict, decision.accepted, decision.total) == ("satisfied", 2, 2)
    assert decide(cel("total == 2 && children.size() == 2"), ["th_a", "th_a", "th_b"], {}).verdict == "satisfied"


def test_unknown_statuses_and_strangers_decide_nothing() -> None:
    """A status that is not done/failed/cancelled is still open; an outcome of a thread not forked is ignored."""
    weird = outcomes(th_a="done", th_b="exploded", th_x="failed")
    decision = decide(ALL, ["th_a", "th_b"], weird)
    assert (decision.verdict, decision.accepted, decision.rejected, decision.open) == ("pending", 1, 0, 1)
    assert decide(ANY, ["th_b"], weird).verdict == "pending"
    assert decide(
        cel("children[1].status == 'open' && children[1].result == null"), ["th_a", "th_b"], weird
    ).verdict == ("satisfied")


def test_cel_sees_the_children_in_fork_order_with_their_results() -> None:
    closed = outcomes(th_c="done", th_a="failed")
    expr = (
        "children.map(c, c.thread) == ['th_a', 'th_b', 'th_c'] && children.map(c, c.status) == ['failed', 'open', "
        "'done'] && children[2].result == 'result of th_c' && children[1].result == null && total == 3 && open == 1"
    )
    assert decide(cel(expr), CHILDREN, closed).verdict == "satisfied"


def test_a_cel_join_over_a_thousand_children_fits_the_budget() -> None:
    children = [f"th_{i:04d}" for i in range(1000)]
    closed = {child: ChildOutcome(child, "done", "458/458 pass " * 30) for child in children}
    expr = "children.all(c, c.status == 'done' && c.result.contains('pass'))"
    assert decide(cel(expr), children, closed).verdict == "satisfied"


@st.composite
def close_orders(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    children = draw(st.lists(st.sampled_from(["th_a", "th_b", "th_c", "th_d", "th_e"]), min_size=0, max_size=6))
    unique = list(dict.fromkeys(children))
    order = draw(st.permutations(unique))
    statuses = draw(st.lists(st.sampled_from(["done", "failed", "cancelled", "weird"]), min_size=len(order),
                             max_size=len(order)))  # fmt: skip
    return children, list(zip(order, statuses, strict=True))


counting = st.one_of(st.just(ALL), st.just(ANY), st.integers(1, 7).map(k_of_n))


@settings(max_examples=150, deadline=None)
@given(counting, close_orders())
def test_all_any_and_k_of_n_are_monotone(
    predicate: JoinPredicate, case: tuple[list[str], list[tuple[str, str]]]
) -> None:
    children, closes = case
    closed: dict[str, ChildOutcome] = {}
    decided: str | None = None
    for thread, status in closes:
        closed[thread] = ChildOutcome(thread, status)
        decision = decide(predicate, children, closed)
        if decided is not None:
            assert decision.verdict == decided
        elif decision.verdict != "pending":
            decided = decision.verdict
    known = all(status != "weird" for _, status in closes)
    if children and known:  # with every child closed as done/failed/cancelled, a counting join is decided
        assert decide(predicate, children, closed).verdict != "pending"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), close_orders())
def test_decide_never_raises_on_any_cel_expression(expr: str, case: tuple[list[str], list[tuple[str, str]]]) -> None:
    children, closes = case
    closed = {thread: ChildOutcome(thread, status) for thread, status in closes}
    decision = decide(cel(expr), children, closed)
    assert decision.verdict in ("pending", "satisfied", "unsatisfiable")


# ------------------------------------------------------------------------------------------------------- bodies


def test_synthesis_body_says_how_the_child_closed() -> None:
    done = synthesis_body(ChildOutcome("th_run_tests", "done", "458/458 pass", "rec_1"))
    assert done == {
        "kind": "core.join.child_closed.v1",
        "_v": 1,
        "child": "th_run_tests",
        "outcome": "done",
        "result": "458/458 pass",
        "child_closer": "rec_1",
        "summary": "child th_run_tests completed with result 458/458 pass",
    }
    assert synthesis_body(ChildOutcome("th_x", "done"))["summary"] == "child th_x completed"
    assert (
        synthesis_body(ChildOutcome("th_x", "failed", "lock timeout"))["summary"] == "child th_x failed: lock timeout"
    )
    assert synthesis_body(ChildOutcome("th_x", "cancelled"))["summary"] == "child th_x was cancelled"
    long = synthesis_body(ChildOutcome("th_x", "done", "line one\nline two " + "x" * 500))
    assert "\n" not in long["summary"] and len(long["summary"]) < 260 and long["result"].endswith("x" * 500)


def test_closing_bodies_close_the_parent_in_both_folds() -> None:
    satisfied = decide(ALL, ["th_a"], outcomes(th_a="done"))
    body = closing_body(ALL, satisfied, "rec_intend")
    assert body["kind"] == "core.join.closed.v1" and body["fulfills"] == "rec_intend" and body["join"] == "all"
    assert (body["accepted"], body["total"], body["_v"]) == (1, 1, 1)
    assert "every child accepted" in body["summary"]

    failed = decide(k_of_n(2), ["th_a", "th_b"], outcomes(th_a="failed"))
    body = closing_body(k_of_n(2), failed, "rec_intend")
    assert body == {
        "kind": "core.join.failed.v1",
        "_v": 1,
        "verdict": "reject",
        "task_event": "fail",
        "reason": failed.reason,
        "join": {"mode": "k_of_n", "k": 2},
    }

    with pytest.raises(SplError):
        closing_body(ALL, decide(ALL, ["th_a"], {}), "rec_intend")


def test_both_folds_read_the_closing_bodies_as_closes() -> None:
    """The thread fold reads ``fulfills`` as done and ``verdict: reject`` as cancelled; the task fold reads fail."""
    intend = {"task": True, "alias": "TASK-0001", "goal": "deploy v2", "join": "all"}
    is_intent: Any = lambda ids: "rec_intend" in ids  # noqa: E731
    for decision, thread_state, task_status in (
        (decide(ALL, ["th_a"], outcomes(th_a="done")), "done", "done"),
        (decide(ALL, ["th_a"], outcomes(th_a="failed")), "cancelled", "failed"),
    ):
        head = fold.FoldHead()
        fold.step(head, "INTEND", intend, "rec_intend", is_intent)
        task = tasks.open_task(intend, "rec_intend")
        for body in (
            synthesis_body(ChildOutcome("th_a", "done", "ok", "rec_a")),
            closing_body(ALL, decision, "rec_intend"),
        ):
            fold.step(head, "KNOW", body, f"rec_{body['kind']}", is_intent)
            tasks.step(task, "KNOW", body, f"rec_{body['kind']}", is_intent)
        assert (head.state, task.status) == (thread_state, task_status)
