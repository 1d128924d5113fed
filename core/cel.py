"""A small, bounded evaluator for the subset of CEL that join predicates need (issue 12, seed 003 "Fork and merge").

A parent INTEND may carry ``{"mode": "cel", "expr": "..."}``: the joiner evaluates the expression over its
children's outcomes each time a child closes (``spl.core.joins``). The expression arrives in a record from any
writer or peer, so its evaluation must be bounded in time and memory, must give the same answer on every
instance, and must never raise anything but a :class:`CelError`.

Why not cel-python (PyPI ``cel-python`` 0.5.0, measured on this machine, Python 3.11):

- It cannot be bounded. There is no step or time budget: the 159-character expression
  ``[1,…,10].all(a, [1,…,10].all(b, … 5 levels … true))`` ran for 16 s, a 156-character nested ``map`` 7.9 s, in the
  daemon's event loop. A wall-clock timeout would need a thread we cannot kill or a subprocess per decision, and a
  timeout is not deterministic (two instances could decide one join differently).
- It crashes on nesting: 100 nested parentheses (201 characters) or 1,000 unary minuses raise Python's
  ``RecursionError`` out of ``evaluate``, not a CEL error.
- It costs 7 more packages (lark, pendulum, google-re2, jmespath, PyYAML, python-dateutil, tzdata; ~15 MB
  installed, two native wheels), ~180 ms at import and 1-90 ms to compile one expression with lark.

What we need is a few dozen lines of grammar: this module is a tokenizer, a recursive-descent parser that counts
its nesting, and a tree-walking evaluator that counts its steps.

Supported (CEL semantics unless noted):

- literals: ``int`` (decimal, ``0x`` hex; 64-bit, overflow is an error), ``double`` (``1.5``, ``2e3``, ``.5``),
  strings in ``'…'`` or ``"…"`` with the escapes ``\\\\ \\' \\" \\n \\r \\t \\a \\b \\f \\v \\? \\` \\xHH \\uHHHH
  \\UHHHHHHHH`` and octal ``\\ooo``, ``true``, ``false``, ``null``, lists ``[a, b]``; comments ``// …``.
- identifiers (the variables the caller declares), field access ``m.f`` and index ``l[i]``, ``m['k']`` on maps and
  lists.
- operators, loosest first: ``? :`` (right-associative), ``||``, ``&&``, ``< <= > >= == != in``, ``+ -``,
  ``* / %``, unary ``! -``. ``&&`` and ``||`` absorb errors both ways as in CEL (``false && error`` and
  ``error && false`` are false; ``true || error`` is true). Equality is heterogeneous (``1 == 'a'`` is false, not
  an error; ``1 == 1.0`` is true); ``< <= > >=`` compare ints and doubles with each other, strings, and bools.
  Arithmetic does not mix ints and doubles (``1 + 1.0`` is an error), ``%`` is for ints; int ``/`` and ``%``
  truncate toward zero, and by zero are errors; double ``/`` by zero is an infinity. ``+`` joins strings and lists.
- functions: ``size(x)`` / ``x.size()`` (strings in code points, lists, maps), ``s.contains(t)``,
  ``s.startsWith(t)``, ``s.endsWith(t)``; the macros ``has(m.f)``, ``l.all(x, p)``, ``l.exists(x, p)``,
  ``l.exists_one(x, p)``, ``l.filter(x, p)``, ``l.map(x, e)`` and ``l.map(x, p, e)`` over lists (and over a map's
  keys). ``all`` / ``exists`` absorb errors like ``&&`` / ``||``.

Not supported (a syntax error names it): unsigned ints (``1u``), bytes, raw and triple-quoted strings, map and
message literals (``{…}``, ``T{…}``), leading-dot names, timestamps and durations, type conversions and ``type()``,
``matches`` (a regular expression from a hostile writer is a denial of service with Python's backtracking ``re``),
and any other function; an unknown function is refused when the expression is compiled, not when it runs.

Bounds, all counted, never timed, so a decision is the same on every instance and does not depend on the caller's
stack: an expression is at most :data:`MAX_EXPRESSION` characters, nests at most :data:`MAX_DEPTH` levels
(parentheses, list literals, call arguments, index expressions and ternary branches each open one), and an
evaluation spends at most ``max_steps`` steps (:data:`MAX_STEPS` by default). A step is one node evaluated, one
macro iteration, one pair of values compared, one element of a list built by ``+``, 16 characters of a string built
by ``+`` or 64 scanned by ``contains``: memory grows with steps, so the budget bounds it too. The worst expression
within the budget runs in tens of milliseconds (see ``docs/tasks.md``, "Join predicates").
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from spl.core.errors import InvalidRequest

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION",
    "MAX_STEPS",
    "CelBudgetExceeded",
    "CelError",
    "CelEvalError",
    "CelSyntaxError",
    "Program",
    "compile_program",
    "to_value",
    "type_name",
]

MAX_EXPRESSION = 1024  # characters
MAX_DEPTH = 24  # nesting levels; CEL's own limits ask implementations for at least 12
MAX_STEPS = 50_000  # per evaluation: ≤ ~25 ms of the event loop (docs/tasks.md)
MAX_VALUE_DEPTH = 32  # nesting of a variable's value (a list of maps is 2)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

RESERVED = frozenset(
    "as break const continue else for function if import let loop package namespace return var void while".split()
)
MACROS = {"all": (2,), "exists": (2,), "exists_one": (2,), "filter": (2,), "map": (2, 3)}
METHODS = {"size": 0, "contains": 1, "startsWith": 1, "endsWith": 1}
GLOBALS = {"size": 1}  # and the macro has(m.f)
RELATIONS = ("<", "<=", ">", ">=", "==", "!=", "in")


class CelError(InvalidRequest):
    """Any failure of a CEL expression: the caller's to fix (400)."""

    code = "INVALID_CEL"


class CelSyntaxError(CelError):
    """The expression cannot be compiled: bad syntax, an unsupported feature, too long or too deep."""

    code = "CEL_SYNTAX"


class CelEvalError(CelError):
    """The expression compiled but its evaluation is an error (no such key, wrong types, overflow…).

    ``&&``, ``||``, ``all`` and ``exists`` absorb it when another operand decides the answer.
    """

    code = "CEL_EVAL"


class CelBudgetExceeded(CelError):
    """The evaluation ran out of steps. Deliberately not a :class:`CelEvalError`: nothing absorbs it."""

    code = "CEL_BUDGET"


# --------------------------------------------------------------------------------------------------- tokenizer

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n\f]+|//[^\n]*)
  | (?P<double>(?:[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|\.[0-9]+(?:[eE][+-]?[0-9]+)?))
  | (?P<int>0[xX][0-9a-fA-F]+|[0-9]+)(?P<unsigned>[uU])?
  | (?P<string>"(?:[^"\\\n\r]|\\.)*"|'(?:[^'\\\n\r]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,\[\](){}])
    """,
    re.VERBOSE,
)
_SIMPLE_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "?": "?",
    "`": "`",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class _Token:
    __slots__ = ("kind", "text", "value", "column")

    def __init__(self, kind: str, text: str, value: Any, column: int) -> None:
        self.kind = kind  # "int" | "double" | "string" | "literal" | "ident" | "op" | "end"
        self.text = text
        self.value = value
        self.column = column


def _syntax(column: int, message: str) -> CelSyntaxError:
    return CelSyntaxError(f"CEL syntax error at column {column + 1}: {message}")


def _unescape(body: str, column: int) -> str:
    """The value of a quoted string's inside (the tokenizer has checked that every backslash escapes something)."""
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = body[i + 1]
        if code in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[code])
            i += 2
        elif code in _HEX_ESCAPES:
            digits = body[i + 2 : i + 2 + _HEX_ESCAPES[code]]
            if len(digits) != _HEX_ESCAPES[code] or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise _syntax(column, f"\\{code} needs {_HEX_ESCAPES[code]} hex digits")
            out.append(_code_point(int(digits, 16), column))
            i += 2 + len(digits)
        elif code in "0123":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits):
                raise _syntax(column, "an octal escape is three digits, \\000 to \\377")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise _syntax(column, f"unknown escape \\{code}")
    return "".join(out)


def _code_point(value: int, column: int) -> str:
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        raise _syntax(column, "an escape names no Unicode character (surrogate or above U+10FFFF)")
    return chr(value)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            char = source[position]
            if char in "\"'":
                raise _syntax(position, "unterminated string (strings end on the line they start)")
            raise _syntax(position, f"unexpected character {char!r}")
        kind = match.lastgroup or ""
        text = match.group()
        column = position
        position = match.end()
        if kind == "space":
            continue
        if kind == "unsigned":  # the int group matched too; lastgroup is the suffix
            raise _syntax(column, "unsigned ints (1u) are not supported; use an int")
        value: Any = None
        if kind == "int":
            value = int(text, 16) if text[:2] in ("0x", "0X") else int(text)
            if value > INT_MAX + 1:  # INT_MAX + 1 is allowed only after a unary minus (the parser checks)
                raise _syntax(column, "int literal out of the 64-bit range")
        elif kind == "double":
            value = float(text)
        elif kind == "string":
            value = _unescape(text[1:-1], column)
        elif kind == "ident":
            if text in ("true", "false", "null"):
                kind, value = "literal", {"true": True, "false": False, "null": None}[text]
            elif text == "in":
                kind = "op"
            elif text in RESERVED:
                raise _syntax(column, f"{text!r} is a reserved word")
        tokens.append(_Token(kind, text, value, column))
    tokens.append(_Token("end", "", None, len(source)))
    return tokens


# ----------------------------------------------------------------------------------------------------- nodes
# Chains of one precedence level (a + b + c, a && b && c, x.f.g[0]) are flat lists, evaluated in a loop: the
# tree is only as tall as the nesting, which MAX_DEPTH bounds, so evaluating it never runs out of stack.


class _Node:
    __slots__ = ()

    def run(self, ev: _Evaluator) -> Any:
        raise NotImplementedError


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def run(self, ev: _Evaluator) -> Any:
        ev.tick()
        return self.value


class _List(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[_Node]) -> None:
        self.items = items

    def run(self, ev: _Evaluator) -> Any:
        ev.tick(1 + len(self.items))
        return [item.run(ev) for item in self.items]


class _Ident(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, ev: _Evaluator) -> Any:
        ev.tick()
        try:
            return ev.variables[self.name]
        except KeyError:
            raise CelEvalError(f"undeclared reference to {self.name!r}") from None


class _Unary(_Node):
    __slots__ = ("ops", "operand")

    def __init__(self, ops: list[str], operand: _Node) -> None:
        self.ops = ops
        self.operand = operand

    def run(self, ev: _Evaluator) -> Any:
        value = self.operand.run(ev)
        for op in reversed(self.ops):
            ev.tick()
            if op == "!":
                if type(value) is not bool:
                    raise CelEvalError(f"no such overload: !{type_name(value)}")
                value = not value
            elif type(value) is int:
                value = _int_result(-value)
            elif type(value) is float:
                value = -value
            else:
                raise CelEvalError(f"no such overload: -{type_name(value)}")
        return value


class _Chain(_Node):
    """``first op1 x1 op2 x2 …`` at one precedence level, left to right."""

    __slots__ = ("first", "rest")

    def __init__(self, first: _Node, rest: list[tuple[str, _Node]]) -> None:
        self.first = first
        self.rest = rest

    def run(self, ev: _Evaluator) -> Any:
        value = self.first.run(ev)
        for op, node in self.rest:
            right = node.run(ev)
            ev.tick()
            value = _binary(op, value, right, ev)
        return value


class _Logic(_Node):
    """``a && b && …`` or ``a || b || …`` with CEL's error absorption: the deciding value wins over an error."""

    __slots__ = ("op", "items")

    def __init__(self, op: str, items: list[_Node]) -> None:
        self.op = op
        self.items = items

    def run(self, ev: _Evaluator) -> Any:
        decisive = self.op == "||"  # the value that decides: true for ||, false for &&
        error: CelEvalError | None = None
        for item in self.items:
            ev.tick()
            try:
                value = item.run(ev)
            except CelEvalError as exc:
                error = error or exc
                continue
            if type(value) is not bool:
                error = error or CelEvalError(f"no such overload: {type_name(value)} {self.op} …")
            elif value is decisive:
                return decisive
        if error is not None:
            raise error
        return not decisive


class _Conditional(_Node):
    __slots__ = ("test", "then", "otherwise")

    def __init__(self, test: _Node, then: _Node, otherwise: _Node) -> None:
        self.test = test
        self.then = then
        self.otherwise = otherwise

    def run(self, ev: _Evaluator) -> Any:
        ev.tick()
        test = self.test.run(ev)
        if type(test) is not bool:
            raise CelEvalError(f"the condition of ? : is {type_name(test)}, not bool")
        return self.then.run(ev) if test else self.otherwise.run(ev)


class _Member(_Node):
    """``base`` followed by ``.field``, ``[index]`` and ``.method(args)`` suffixes, applied left to right."""

    __slots__ = ("base", "suffixes")

    def __init__(self, base: _Node, suffixes: list[_Suffix]) -> None:
        self.base = base
        self.suffixes = suffixes

    def run(self, ev: _Evaluator) -> Any:
        value = self.base.run(ev)
        for suffix in self.suffixes:
            ev.tick()
            value = suffix.apply(value, ev)
        return value


class _Suffix:
    __slots__ = ()

    def apply(self, value: Any, ev: _Evaluator) -> Any:
        raise NotImplementedError


class _Field(_Suffix):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def apply(self, value: Any, ev: _Evaluator) -> Any:
        if type(value) is not dict:
            raise CelEvalError(f"{type_name(value)} has no field {self.name!r}")
        if self.name not in value:
            raise CelEvalError(f"no such key: {self.name!r}")
        return value[self.name]


class _Index(_Suffix):
    __slots__ = ("index",)

    def __init__(self, index: _Node) -> None:
        self.index = index

    def apply(self, value: Any, ev: _Evaluator) -> Any:
        index = self.index.run(ev)
        if type(value) is list:
            if type(index) is not int:
                raise CelEvalError(f"a list index is an int, not {type_name(index)}")
            if not 0 <= index < len(value):
                raise CelEvalError(f"index {index} out of range for a list of {len(value)}")
            return value[index]
        if type(value) is dict:
            if type(index) is not str or index not in value:
                raise CelEvalError(f"no such key: {_short(index)}")
            return value[index]
        raise CelEvalError(f"{type_name(value)} cannot be indexed")


class _Method(_Suffix):
    __slots__ = ("name", "args")

    def __init__(self, name: str, args: list[_Node]) -> None:
        self.name = name
        self.args = args

    def apply(self, value: Any, ev: _Evaluator) -> Any:
        if self.name == "size":
            return _size(value)
        other = self.args[0].run(ev)
        if type(value) is not str or type(other) is not str:
            raise CelEvalError(f"no such overload: {type_name(value)}.{self.name}({type_name(other)})")
        ev.tick(len(value) // 64)
        if self.name == "contains":
            return other in value
        if self.name == "startsWith":
            return value.startswith(other)
        return value.endswith(other)


class _Macro(_Suffix):
    """``range.all(x, p)`` and its siblings: ``body`` evaluated with ``var`` bound to each element in turn."""

    __slots__ = ("name", "var", "body", "transform")

    def __init__(self, name: str, var: str, body: _Node, transform: _Node | None) -> None:
        self.name = name
        self.var = var
        self.body = body
        self.transform = transform  # map(x, p, e): e; body is then the filter p

    def apply(self, value: Any, ev: _Evaluator) -> Any:
        if type(value) is list:
            elements: list[Any] = value
        elif type(value) is dict:
            elements = list(value)
        else:
            raise CelEvalError(f"{self.name}() needs a list or a map, not {type_name(value)}")
        variables = ev.variables
        saved = variables.get(self.var, _UNBOUND)  # a macro inside a macro may reuse the name: restore it after
        try:
            if self.name in ("all", "exists"):
                return self._quantify(ev, elements, decisive=self.name == "exists")
            kept = elements if self.name == "map" and self.transform is None else self._kept(ev, elements)
            if self.name == "exists_one":
                return len(kept) == 1
            if self.name == "filter":
                return kept
            transform = self.body if self.transform is None else self.transform
            out = []
            for element in kept:
                ev.tick()
                variables[self.var] = element
                out.append(transform.run(ev))
            return out
        finally:
            if saved is _UNBOUND:
                variables.pop(self.var, None)
            else:
                variables[self.var] = saved

    def _quantify(self, ev: _Evaluator, elements: list[Any], decisive: bool) -> bool:
        """``all`` (decisive false) or ``exists`` (decisive true), absorbing errors as ``&&`` / ``||`` do."""
        error: CelEvalError | None = None
        for element in elements:
            ev.tick()
            ev.variables[self.var] = element
            try:
                result = self.body.run(ev)
            except CelEvalError as exc:
                error = error or exc
                continue
            if type(result) is not bool:
                error = error or CelEvalError(f"{self.name}() needs a bool predicate, got {type_name(result)}")
            elif result is decisive:
                return decisive
        if error is not None:
            raise error
        return not decisive

    def _kept(self, ev: _Evaluator, elements: list[Any]) -> list[Any]:
        """The elements the predicate ``body`` holds for (errors propagate, as in CEL's filter)."""
        kept = []
        for element in elements:
            ev.tick()
            ev.variables[self.var] = element
            result = self.body.run(ev)
            if type(result) is not bool:
                raise CelEvalError(f"{self.name}() needs a bool predicate, got {type_name(result)}")
            if result:
                kept.append(element)
        return kept


_UNBOUND = object()


class _Size(_Node):
    """The global ``size(x)``."""

    __slots__ = ("arg",)

    def __init__(self, arg: _Node) -> None:
        self.arg = arg

    def run(self, ev: _Evaluator) -> Any:
        ev.tick()
        return _size(self.arg.run(ev))


class _Has(_Node):
    """``has(m.f)``: whether map ``m`` has key ``f`` (an error only if ``m`` is not a map)."""

    __slots__ = ("operand", "name")

    def __init__(self, operand: _Node, name: str) -> None:
        self.operand = operand
        self.name = name

    def run(self, ev: _Evaluator) -> Any:
        ev.tick()
        value = self.operand.run(ev)
        if type(value) is not dict:
            raise CelEvalError(f"has() needs a map, not {type_name(value)}")
        return self.name in value


# ---------------------------------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over CEL's grammar; every recursive entry counts one level against MAX_DEPTH."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        if token.kind != "end":
            self.at += 1
        return token

    def is_op(self, *ops: str) -> bool:
        token = self.tokens[self.at]
        return token.kind == "op" and token.text in ops

    def expect(self, op: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != op:
            raise _syntax(token.column, f"expected {op!r}, found {_describe(token)}")

    def whole(self) -> _Node:
        node = self.expression()
        token = self.peek()
        if token.kind != "end":
            raise _syntax(token.column, f"unexpected {_describe(token)} after a complete expression")
        return node

    def expression(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _syntax(self.peek().column, f"nested deeper than {MAX_DEPTH} levels")
        test = self.logic("||", lambda: self.logic("&&", self.relation))
        if self.is_op("?"):
            self.take()
            then = self.logic("||", lambda: self.logic("&&", self.relation))
            self.expect(":")
            test = _Conditional(test, then, self.expression())
        self.depth -= 1
        return test

    def logic(self, op: str, operand: Any) -> _Node:
        items = [operand()]
        while self.is_op(op):
            self.take()
            items.append(operand())
        return items[0] if len(items) == 1 else _Logic(op, items)

    def chain(self, ops: tuple[str, ...], operand: Any) -> _Node:
        first = operand()
        rest: list[tuple[str, _Node]] = []
        while self.is_op(*ops):
            rest.append((self.take().text, operand()))
        return _Chain(first, rest) if rest else first

    def relation(self) -> _Node:
        return self.chain(RELATIONS, lambda: self.chain(("+", "-"), lambda: self.chain(("*", "/", "%"), self.unary)))

    def unary(self) -> _Node:
        ops: list[str] = []
        while self.is_op("!", "-"):
            ops.append(self.take().text)
        column = self.peek().column
        base = self.primary()
        operand = self.member(base)
        if isinstance(base, _Literal) and type(base.value) is int:
            if operand is base and ops and ops[-1] == "-":  # -9223372036854775808 is a literal: fold the minus
                ops.pop()
                operand = _Literal(-base.value)
            elif base.value > INT_MAX:
                raise _syntax(column, "int literal out of the 64-bit range")
        return _Unary(ops, operand) if ops else operand

    def member(self, base: _Node) -> _Node:
        suffixes: list[_Suffix] = []
        while True:
            if self.is_op("."):
                self.take()
                name = self.take()
                if name.kind != "ident":
                    raise _syntax(name.column, f"expected a field or method name after '.', found {_describe(name)}")
                if self.is_op("("):
                    suffixes.append(self.method(name, self.arguments()))
                else:
                    suffixes.append(_Field(name.text))
            elif self.is_op("["):
                self.take()
                suffixes.append(_Index(self.expression()))
                self.expect("]")
            else:
                return _Member(base, suffixes) if suffixes else base

    def method(self, name: _Token, args: list[_Node]) -> _Suffix:
        if name.text in MACROS:
            if len(args) not in MACROS[name.text]:
                counts = " or ".join(str(n) for n in MACROS[name.text])
                raise _syntax(name.column, f"{name.text}() takes {counts} arguments, got {len(args)}")
            var = args[0]
            if not isinstance(var, _Ident):
                raise _syntax(name.column, f"the first argument of {name.text}() is a variable name")
            return _Macro(name.text, var.name, args[1], args[2] if len(args) == 3 else None)
        if name.text in METHODS:
            if len(args) != METHODS[name.text]:
                raise _syntax(name.column, f"{name.text}() takes {METHODS[name.text]} arguments, got {len(args)}")
            return _Method(name.text, args)
        raise _syntax(name.column, f"unknown function {name.text}(); supported: {_SUPPORTED}")

    def arguments(self) -> list[_Node]:
        self.expect("(")
        args: list[_Node] = []
        while not self.is_op(")"):
            args.append(self.expression())
            if not self.is_op(")"):
                self.expect(",")
        self.take()
        return args

    def primary(self) -> _Node:
        token = self.take()
        if token.kind in ("int", "double", "string", "literal"):
            return _Literal(token.value)
        if token.kind == "ident":
            if not self.is_op("("):
                return _Ident(token.text)
            args = self.arguments()
            if token.text == "size" and len(args) == 1:
                return _Size(args[0])
            if token.text == "has" and len(args) == 1:
                target = args[0]
                if isinstance(target, _Member) and isinstance(target.suffixes[-1], _Field):
                    field = target.suffixes[-1]
                    rest = target.suffixes[:-1]
                    return _Has(_Member(target.base, rest) if rest else target.base, field.name)
                raise _syntax(token.column, "has() takes a field selection, as in has(m.f)")
            if token.text in ("size", "has") or token.text in MACROS:
                raise _syntax(token.column, f"{token.text}() is called as shown in: {_SUPPORTED}")
            raise _syntax(token.column, f"unknown function {token.text}(); supported: {_SUPPORTED}")
        if token.kind == "op" and token.text == "(":
            node = self.expression()
            self.expect(")")
            return node
        if token.kind == "op" and token.text == "[":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _syntax(token.column, f"nested deeper than {MAX_DEPTH} levels")
            items: list[_Node] = []
            while not self.is_op("]"):
                items.append(self.expression())
                if not self.is_op("]"):
                    self.expect(",")
            self.take()
            self.depth -= 1
            return _List(items)
        if token.kind == "op" and token.text == "{":
            raise _syntax(token.column, "map literals are not supported")
        if token.kind == "op" and token.text == ".":
            raise _syntax(token.column, "leading-dot names are not supported")
        raise _syntax(token.column, f"expected a value, found {_describe(token)}")


_SUPPORTED = (
    "size(x), x.size(), s.contains(t), s.startsWith(t), s.endsWith(t), has(m.f), "
    "l.all(x, p), l.exists(x, p), l.exists_one(x, p), l.filter(x, p), l.map(x, e), l.map(x, p, e)"
)


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text[:20])


def _free_names(node: object, bound: frozenset[str], out: set[str]) -> None:
    """The identifiers ``node`` reads that no enclosing macro binds (the tree is at most MAX_DEPTH deep)."""
    if isinstance(node, _Ident):
        if node.name not in bound:
            out.add(node.name)
    elif isinstance(node, _List | _Logic):
        for item in node.items:
            _free_names(item, bound, out)
    elif isinstance(node, _Unary | _Size):
        _free_names(node.operand if isinstance(node, _Unary) else node.arg, bound, out)
    elif isinstance(node, _Has):
        _free_names(node.operand, bound, out)
    elif isinstance(node, _Chain):
        _free_names(node.first, bound, out)
        for _, item in node.rest:
            _free_names(item, bound, out)
    elif isinstance(node, _Conditional):
        for item in (node.test, node.then, node.otherwise):
            _free_names(item, bound, out)
    elif isinstance(node, _Member):
        _free_names(node.base, bound, out)
        for suffix in node.suffixes:
            if isinstance(suffix, _Index):
                _free_names(suffix.index, bound, out)
            elif isinstance(suffix, _Method):
                for arg in suffix.args:
                    _free_names(arg, bound, out)
            elif isinstance(suffix, _Macro):
                inner = bound | {suffix.var}
                _free_names(suffix.body, inner, out)
                if suffix.transform is not None:
                    _free_names(suffix.transform, inner, out)


# ------------------------------------------------------------------------------------------------- evaluation


class _Evaluator:
    __slots__ = ("variables", "steps", "limit")

    def __init__(self, variables: dict[str, Any], limit: int) -> None:
        self.variables = variables
        self.steps = 0
        self.limit = limit

    def tick(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > self.limit:
            raise CelBudgetExceeded(
                f"the CEL expression needs more than {self.limit} evaluation steps; simplify it "
                "(fewer nested macros, smaller lists)"
            )


def type_name(value: Any) -> str:
    """The CEL type of a value this module produces: null, bool, int, double, string, list or map."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is float:
        return "double"
    if kind is str:
        return "string"
    if kind is list:
        return "list"
    if kind is dict:
        return "map"
    return "null"


def _short(value: Any) -> str:
    text = repr(value) if type(value) in (str, int, float, bool) else type_name(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_result(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise CelEvalError("int overflow (CEL ints are 64-bit)")
    return value


def _size(value: Any) -> int:
    if type(value) in (str, list, dict):
        return len(value)
    raise CelEvalError(f"no such overload: size({type_name(value)})")


def _equals(left: Any, right: Any, ev: _Evaluator) -> bool:
    ev.tick()
    kinds = (type_name(left), type_name(right))
    if kinds[0] in ("int", "double") and kinds[1] in ("int", "double"):
        return bool(left == right)
    if kinds[0] != kinds[1]:
        return False
    if kinds[0] == "list":
        return len(left) == len(right) and all(_equals(a, b, ev) for a, b in zip(left, right, strict=True))
    if kinds[0] == "map":
        return left.keys() == right.keys() and all(_equals(left[key], right[key], ev) for key in left)
    return bool(left == right)


def _binary(op: str, left: Any, right: Any, ev: _Evaluator) -> Any:
    if op == "==":
        return _equals(left, right, ev)
    if op == "!=":
        return not _equals(left, right, ev)
    if op == "in":
        if type(right) is list:
            return any(_equals(left, item, ev) for item in right)
        if type(right) is dict:
            return type(left) is str and left in right
        raise CelEvalError(f"no such overload: {type_name(left)} in {type_name(right)}")
    kinds = (type_name(left), type_name(right))
    if op in ("<", "<=", ">", ">="):
        numeric = kinds[0] in ("int", "double") and kinds[1] in ("int", "double")
        if not (numeric or (kinds[0] == kinds[1] and kinds[0] in ("string", "bool"))):
            raise CelEvalError(f"no such overload: {kinds[0]} {op} {kinds[1]}")
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        return bool(left >= right)
    if kinds[0] != kinds[1]:
        raise CelEvalError(f"no such overload: {kinds[0]} {op} {kinds[1]} (CEL does not mix types in arithmetic)")
    kind = kinds[0]
    if op == "+":
        if kind == "string":
            ev.tick((len(left) + len(right)) // 16)
            return left + right
        if kind == "list":
            ev.tick(len(left) + len(right))
            return left + right
    if kind == "int":
        return _int_arithmetic(op, left, right)
    if kind == "double" and op != "%":
        return _double_arithmetic(op, left, right)
    raise CelEvalError(f"no such overload: {kind} {op} {kind}")


def _int_arithmetic(op: str, left: int, right: int) -> int:
    if op == "+":
        return _int_result(left + right)
    if op == "-":
        return _int_result(left - right)
    if op == "*":
        return _int_result(left * right)
    if right == 0:
        raise CelEvalError("division by zero" if op == "/" else "modulus by zero")
    quotient = abs(left) // abs(right)  # CEL truncates toward zero, as C does; Python floors
    if (left < 0) != (right < 0):
        quotient = -quotient
    if op == "/":
        return _int_result(quotient)
    return left - right * quotient


def _double_arithmetic(op: str, left: float, right: float) -> float:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0.0:  # IEEE 754, as CEL: x/0 is ±inf, 0/0 is nan (Python raises instead)
        if left == 0.0 or math.isnan(left):
            return math.nan
        return math.copysign(math.inf, left) * math.copysign(1.0, right)
    return left / right


# ---------------------------------------------------------------------------------------------------- public


def to_value(value: object, _depth: int = 0) -> Any:
    """A JSON-like Python value as a CEL value: tuples become lists; anything else that CEL has no type for raises.

    Raises:
        CelEvalError: a type CEL has no counterpart for, a non-string map key, an int outside 64 bits, or nesting
            deeper than ``MAX_VALUE_DEPTH``.
    """
    if _depth > MAX_VALUE_DEPTH:
        raise CelEvalError(f"a variable is nested deeper than {MAX_VALUE_DEPTH} levels")
    if value is None or type(value) in (bool, float, str):
        return value
    if type(value) is int:
        return _int_result(value)
    if isinstance(value, list | tuple):
        return [to_value(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(type(key) is str for key in value):
            raise CelEvalError("a variable's map keys must be strings")
        return {key: to_value(item, _depth + 1) for key, item in value.items()}
    raise CelEvalError(f"a variable holds a {type(value).__name__}, which CEL has no type for")


class Program:
    """A compiled expression: evaluate it as often as you like (it keeps no state between evaluations)."""

    __slots__ = ("source", "_root")

    def __init__(self, source: str, root: _Node) -> None:
        self.source = source
        self._root = root

    def __repr__(self) -> str:
        return f"Program({self.source[:60]!r}{'…' if len(self.source) > 60 else ''})"

    def evaluate(self, variables: Mapping[str, object], *, max_steps: int = MAX_STEPS) -> Any:
        """The expression's value; see :meth:`evaluate_counted`."""
        return self.evaluate_counted(variables, max_steps=max_steps)[0]

    def evaluate_counted(self, variables: Mapping[str, object], *, max_steps: int = MAX_STEPS) -> tuple[Any, int]:
        """(the value, the steps it took) with ``variables`` bound (converted by :func:`to_value`).

        Raises:
            CelEvalError: the evaluation is an error (a bad variable value, a missing key, wrong types…).
            CelBudgetExceeded: it needed more than ``max_steps`` steps.
        """
        ev = _Evaluator({name: to_value(value) for name, value in variables.items()}, max_steps)
        try:
            value = self._root.run(ev)
        except (RecursionError, MemoryError):  # the depth and step bounds should make this unreachable
            raise CelBudgetExceeded("the CEL expression exhausted the evaluator's stack or memory") from None
        return value, ev.steps


def compile_program(source: object, *, declared: Collection[str] | None = None) -> Program:
    """Parse ``source`` once; ``declared`` (when given) are the only variable names it may read.

    Raises:
        CelSyntaxError: not a string, empty, longer than ``MAX_EXPRESSION``, nested deeper than ``MAX_DEPTH``,
            bad syntax, an unsupported feature or function, or a variable not in ``declared``.
    """
    if not isinstance(source, str):
        raise CelSyntaxError(f"a CEL expression is a string, not {type(source).__name__}")
    if len(source) > MAX_EXPRESSION:
        raise CelSyntaxError(f"a CEL expression is at most {MAX_EXPRESSION} characters (this one has {len(source)})")
    if not source.strip():
        raise CelSyntaxError("the CEL expression is empty")
    try:
        root = _Parser(_tokenize(source)).whole()
    except RecursionError:  # unreachable with MAX_DEPTH unless the caller's own stack is nearly full
        raise CelSyntaxError(f"the CEL expression is nested too deeply (at most {MAX_DEPTH} levels)") from None
    if declared is not None:
        names: set[str] = set()
        _free_names(root, frozenset(), names)
        unknown = sorted(names - set(declared))
        if unknown:
            raise CelSyntaxError(
                f"undeclared variable {unknown[0]!r}; the variables are: {', '.join(sorted(declared))}"
            )
    return Program(source, root)
