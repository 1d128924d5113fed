"""The CEL subset of join predicates: its semantics, and that hostile expressions stay inside their bounds.

Expressions arrive in records from any writer or peer: whatever the text, compiling raises at most a
``CelSyntaxError`` and evaluating at most a ``CelEvalError`` or ``CelBudgetExceeded``, within the step budget.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.cel import (
    MAX_DEPTH,
    MAX_EXPRESSION,
    MAX_STEPS,
    CelBudgetExceeded,
    CelError,
    CelEvalError,
    CelSyntaxError,
    compile_program,
    to_value,
)
from spl.core.errors import InvalidRequest

CHILDREN = [
    {"thread": "th_run_tests", "status": "done", "result": "458/458 pass"},
    {"thread": "th_migrate", "status": "failed", "result": "lock timeout"},
    {"thread": "th_docs", "status": "open", "result": None},
]
VARIABLES: dict[str, Any] = {"children": CHILDREN, "accepted": 1, "rejected": 1, "open": 1, "total": 3}


def run(source: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return compile_program(source).evaluate(VARIABLES if variables is None else variables, **kwargs)


def error_of(source: str) -> CelError:
    with pytest.raises(CelError) as caught:
        run(source)
    return caught.value


# The examples docs/joins.md documents, with the values they give over VARIABLES.
DOCUMENTED = [
    ("accepted >= 2", False),
    ("accepted * 2 > total", False),
    ("rejected == 0 && accepted == total", False),
    ("children.exists(c, c.thread == 'th_run_tests' && c.status == 'done')", True),
    ("children.exists(c, c.status == 'done' && c.result.contains('pass'))", True),
    ("children.filter(c, c.status == 'failed').size() <= 1", True),
    ("children.exists_one(c, c.status == 'failed')", True),
    ("size(children.map(c, c.status != 'open', c.thread)) == 2", True),
    # the guard docs/joins.md recommends: false for the open child, not an error on its null result
    ("children[2].status == 'done' && children[2].result.contains('pass')", False),
    ("children.all(c, c.status == 'done')", False),
    ("children[0].status == 'done' ? true : accepted > 1", True),
]


@pytest.mark.parametrize(("source", "expected"), DOCUMENTED)
def test_the_documented_examples(source: str, expected: bool) -> None:
    assert run(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # literals
        ("0x1F", 31),
        ("-9223372036854775808", -(2**63)),
        ("1.5e1", 15.0),
        (".5", 0.5),
        ("'a\\n\\'b\\u00e9\\x41\\101'", "a\n'béAA"),
        ('"double"', "double"),
        ("null", None),
        ("[1, 'a', [true]]", [1, "a", [True]]),
        ("[1, 2,]", [1, 2]),
        ("// a comment\n 1", 1),
        # precedence: * over +, + over relations, relations over &&, && over ||, || over ? :
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("1 + 2 < 4", True),
        ("true || false && false", True),
        ("false ? 1 : true ? 2 : 3", 2),
        ("false || true ? 'y' : 'n'", "y"),
        ("!false && true", True),
        ("-(1 - 3)", 2),
        ("--1", 1),
        ("!!true", True),
        # arithmetic: ints truncate toward zero like C
        ("-7 / 2", -3),
        ("-7 % 2", -1),
        ("7 % -2", 1),
        ("1.0 / 4.0", 0.25),
        ("'ab' + 'cd'", "abcd"),
        ("[1] + [2]", [1, 2]),
        # comparisons and equality
        ("1 == 1.0", True),
        ("1 < 1.5", True),
        ("1 == 'a'", False),
        ("null == null", True),
        ("[1, [2]] == [1, [2]]", True),
        ("[1] != [1, 2]", True),
        ("'a' < 'b'", True),
        ("false < true", True),
        ("2 in [1, 2]", True),
        ("'thread' in children[0]", True),
        ("'nope' in children[0]", False),
        # access
        ("children[1].result", "lock timeout"),
        ("children[0]['status']", "done"),
        ("has(children[2].result)", True),
        ("has(children[2].nope)", False),
        # functions and macros
        ("size('héllo')", 5),
        ("'abc'.size()", 3),
        ("children.size()", 3),
        ("'abc'.startsWith('ab') && 'abc'.endsWith('bc')", True),
        ("[1, 2, 3].map(x, x * 2)", [2, 4, 6]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 3].filter(x, x % 2 == 1)", [1, 3]),
        ("[].all(x, false)", True),
        ("[].exists(x, true)", False),
        ("children[0].all(k, k.size() > 0)", True),
        ("[1, 2].all(x, [3].all(x, x == 3)) && [1].exists(x, x == 1)", True),  # shadowing is restored
        # CEL's error-absorbing && and ||, both ways round
        ("1 / 0 == 1 || true", True),
        ("true || 1 / 0 == 1", True),
        ("false && nope", False),
        ("nope && false", False),
        ("[0, 1].exists(x, 1 / x == 1)", True),
        ("[0, 1].all(x, 1 / x == 5)", False),
    ],
)
def test_semantics(source: str, expected: Any) -> None:
    value = run(source)
    assert value == expected and type(value) is type(expected)


def test_ieee_division_by_zero() -> None:
    assert run("1.0 / 0.0") == math.inf
    assert run("-1.0 / 0.0") == -math.inf
    assert math.isnan(run("0.0 / 0.0"))


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("nope > 1", "undeclared reference to 'nope'"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "modulus by zero"),
        ("9223372036854775807 + 1", "int overflow"),
        ("-(-9223372036854775807 - 1)", "int overflow"),
        ("1 + 1.0", "does not mix types"),
        ("'a' < 1", "no such overload"),
        ("!1", "no such overload"),
        ("children[3]", "out of range"),
        ("children['x']", "a list index is an int"),
        ("children[0].nope", "no such key: 'nope'"),
        ("accepted.field", "int has no field"),
        ("1 ? 2 : 3", "condition of ? :"),
        ("1 || false", "no such overload"),
        ("[1].all(x, x)", "bool predicate"),
        ("[1].filter(x, 1)", "bool predicate"),
        ("children[2].result.contains('x')", "null.contains(string)"),
        ("size(1)", "size(int)"),
        ("1.5 % 1.0", "no such overload: double % double"),
        ("'a' in 'abc'", "string in string"),
        ("5.all(x, true)", "needs a list or a map"),
    ],
)
def test_evaluation_errors_name_the_problem(source: str, fragment: str) -> None:
    error = error_of(source)
    assert isinstance(error, CelEvalError) and fragment in error.message
    assert isinstance(error, InvalidRequest) and error.status == 400 and error.code == "CEL_EVAL"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("(1", "expected ')'"),
        ("1 +", "expected a value"),
        ("1 2", "after a complete expression"),
        ("a = 1", "unexpected character '='"),
        ("'open", "unterminated string"),
        ("'\\q'", "unknown escape"),
        ("'\\ud800'", "surrogate"),
        ("1u", "unsigned ints"),
        ("9223372036854775808", "64-bit range"),
        ("{'a': 1}", "map literals"),
        (".a", "leading-dot"),
        ("x.matches('a+')", "unknown function matches()"),
        ("int('1')", "unknown function int()"),
        ("[1].all(1, true)", "a variable name"),
        ("[1].map(x)", "takes 2 or 3 arguments"),
        ("'a'.size(1)", "takes 0 arguments"),
        ("has(x)", "field selection"),
        ("if", "reserved word"),
        ("a ? b ? c : d : e", "expected ':'"),
    ],
)
def test_syntax_errors_name_the_problem(source: str, fragment: str) -> None:
    with pytest.raises(CelSyntaxError) as caught:
        compile_program(source)
    assert fragment in caught.value.message and caught.value.code == "CEL_SYNTAX"


def test_declared_variables_are_checked_when_compiling_and_macro_variables_are_bound() -> None:
    declared = ("children", "accepted")
    compile_program("children.all(c, c.status == 'done') && accepted > 0", declared=declared)
    with pytest.raises(CelSyntaxError, match="undeclared variable 'c'"):
        compile_program("children.all(x, true) && c.status == 'done'", declared=declared)
    with pytest.raises(CelSyntaxError, match="undeclared variable 'accpted'"):
        compile_program("accpted > 0", declared=declared)


def test_non_strings_and_long_expressions_are_refused() -> None:
    with pytest.raises(CelSyntaxError, match="a string"):
        compile_program(42)
    compile_program("1" + " " * (MAX_EXPRESSION - 1))
    with pytest.raises(CelSyntaxError, match=f"at most {MAX_EXPRESSION} characters"):
        compile_program("1" + " " * MAX_EXPRESSION)


def test_nesting_is_counted_not_recursed() -> None:
    deepest = "(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1)
    assert run(deepest) == 1
    for too_deep in (
        "(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH,
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        "(" * 510 + "1" + ")" * 510,  # cel-python: RecursionError from 100 levels
        "size(" * 150 + "'a'" + ")" * 150,
    ):
        with pytest.raises(CelSyntaxError, match="nested deeper"):
            compile_program(too_deep)


def test_long_flat_chains_do_not_nest() -> None:
    """Chains at one level (a + b + …, !!!…, x.f.g…) are loops, not recursion, so 1 KiB of them is fine."""
    assert run("-" * 1000 + "1") == 1
    assert run("!" * 1000 + "true") is True
    assert run("+".join(["1"] * 300)) == 300
    assert run("||".join(["false"] * 120) + "||true") is True
    assert run("children" + ".size()" * 1 + " == 3" + " && true" * 100) is True


def deep_call(frames: int, source: str) -> Any:
    return deep_call(frames - 1, source) if frames else run(source)


def test_the_deepest_expression_still_runs_on_a_deep_stack() -> None:
    """The depth bound leaves room: a caller 400 frames deep still gets the answer, not a RecursionError."""
    nested = "[1].all(x, " * 11 + "(" * 11 + "x == 1" + ")" * 11 + ")" * 11
    assert deep_call(400, nested) is True


# Hostile expressions cel-python runs for seconds (measured: 16 s and 7.9 s) stop at the step budget.
L10 = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
HOSTILE = [
    f"{L10}.all(a, {L10}.all(b, {L10}.all(c, {L10}.all(d, {L10}.all(e, true)))))",
    f"{L10}.map(a, {L10}.map(b, {L10}.map(c, {L10}.map(d, {L10})))).size() > 0",
    "['" + "x" * 880 + "'].map(a, " + "+".join(["a"] * 50) + ")[0].size() > 0",
    "[[1, 2, 3, 4, 5, 6, 7, 8]].map(a, [" + "+".join(["a"] * 12) + "].map(b, [" + "+".join(["b"] * 12) + "]"
    ".map(c, " + "+".join(["c"] * 12) + ")))",
    f"{L10}.all(a, {L10}.all(b, {L10}.all(c, [{L10}] == [{L10}])))",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_expressions_stop_at_the_budget(source: str) -> None:
    program = compile_program(source)
    with pytest.raises(CelBudgetExceeded, match="more than"):
        program.evaluate(VARIABLES)
    with pytest.raises(CelBudgetExceeded):
        program.evaluate(VARIABLES, max_steps=100)


def test_the_budget_is_not_absorbed_by_or() -> None:
    """An exhausted budget is not a CEL error that ``|| true`` may swallow: it ends the evaluation."""
    with pytest.raises(CelBudgetExceeded):
        run(f"{L10}.all(a, {L10}.all(b, {L10}.all(c, {L10}.all(d, true)))) || true", max_steps=5000)


def test_steps_are_counted_so_a_budget_is_the_same_everywhere() -> None:
    program = compile_program("children.all(c, c.status != 'x')")
    value, steps = program.evaluate_counted(VARIABLES)
    assert value is True and steps == program.evaluate_counted(VARIABLES)[1]
    assert program.evaluate(VARIABLES, max_steps=steps) is True
    with pytest.raises(CelBudgetExceeded):
        program.evaluate(VARIABLES, max_steps=steps - 1)


def test_variables_must_be_json_like() -> None:
    assert to_value((1, {"a": [None, 1.5]})) == [1, {"a": [None, 1.5]}]
    too_deep: Any = 1
    for _ in range(40):
        too_deep = [too_deep]
    for bad in ({1: 2}, object(), 2**70, too_deep):
        with pytest.raises(CelEvalError):
            compile_program("1").evaluate({"v": bad})


def test_evaluation_leaves_the_callers_variables_alone() -> None:
    variables = {"children": [{"thread": "a"}], "c": 7}
    assert run("children.all(c, has(c.thread)) && c == 7", variables) is True
    assert variables == {"children": [{"thread": "a"}], "c": 7}


# ---------------------------------------------------------------------------------------------------- properties

CEL_PIECES = [
    "children", "accepted", "open", "total", "c", "x", ".", ",", "(", ")", "[", "]", "!", "-", "+", "*", "/", "%",
    "<", "<=", "==", "!=", " in ", "&&", "||", "?", ":", "0", "1", "2.5", "'s'", '"t"', "true", "null", "size",
    ".all", ".exists", ".exists_one", ".filter", ".map", ".contains", "has", "status", "result", "'\\", "{", " ",
    "9223372036854775807", "0x", "u", "//",
]  # fmt: skip
soups = st.lists(st.sampled_from(CEL_PIECES), max_size=60).map("".join)


def assert_bounded(source: str, budget: int) -> None:
    try:
        program = compile_program(source)
    except CelSyntaxError:
        return
    try:
        _, steps = program.evaluate_counted(VARIABLES, max_steps=budget)
    except CelBudgetExceeded:
        return
    except CelEvalError:
        return
    assert steps <= budget


@settings(max_examples=200, deadline=None)
@given(soups, st.sampled_from([50, 1000, MAX_STEPS]))
def test_token_soup_never_raises_anything_else_and_stays_within_budget(source: str, budget: int) -> None:
    assert_bounded(source, budget)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_text_never_raises_anything_else(source: str) -> None:
    assert_bounded(source, 1000)


def expressions() -> st.SearchStrategy[str]:
    """Well-formed expressions, so the evaluator (not just the parser) meets every construct."""
    leaves = st.sampled_from(
        ["1", "-2", "0", "2.5", "'a'", "'pass'", "true", "false", "null", "accepted", "open", "total", "[1, 2]",
         "children", "children[0]", "children[1].result", "x"]
    )  # fmt: skip

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.sampled_from(["+", "-", "*", "/", "%", "<", "<=", "==", "!=", "in", "&&", "||"])
        return st.one_of(
            st.tuples(inner, binary, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(["!", "-"]), inner).map(lambda t: f"{t[0]}{t[1]}"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            st.tuples(inner, st.sampled_from(["all", "exists", "exists_one", "filter", "map"]), inner).map(
                lambda t: f"{t[0]}.{t[1]}(x, {t[2]})"
            ),
            st.tuples(inner, st.sampled_from([".size()", ".status", "[0]", ".contains('a')"])).map("".join),
            st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        )

    return st.recursive(leaves, grow, max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(expressions(), st.sampled_from([30, 500, MAX_STEPS]))
def test_generated_expressions_evaluate_within_budget(source: str, budget: int) -> None:
    assert_bounded(source, budget)
