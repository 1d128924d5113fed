"""Canonical JSON: the byte string every record id and signature is computed over.

Spec §2.3. Values are normalised first (integral floats become exact integers, keys are
sorted by code point, NaN/Infinity are refused), then serialised with the standard
library's ``json`` without whitespace and without ASCII escaping.

That reference path costs 10-15 µs for a small record, and every record a peer sends is
hashed, so :func:`canonical_json` first asks :func:`is_plain`: a value made only of dicts with
string keys, lists, strings, integers, booleans and null (no float anywhere) has the same bytes
from ``msgspec``'s sorted encoder as from the reference, in about 2 µs walk and encoding included. Floats are
where msgspec differs (``1e21``, ``1e-7``, ``1.0``: design/runtime.md, pitfalls), so any float,
any other type, and anything nested too deep takes the reference path, which also raises
every error. The property tests hold both paths byte-identical to the SDK's own function.

Nesting is bounded (:data:`MAX_DEPTH`) and normalisation walks the value with an explicit
stack, so no input — from a client or a peer — can exhaust Python's recursion limit here
(a list nested 500 deep used to raise ``RecursionError`` and answer 500).
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

__all__ = [
    "MAX_DEPTH",
    "CanonicalError",
    "NestingTooDeep",
    "canonical_json",
    "is_plain",
    "normalize",
    "reference_canonical_json",
]

MAX_DEPTH = 64
"""How many levels of arrays/objects may nest below the top-level value.

For a record the top level is the envelope, so its ``body`` is level 1 and the body may
nest 64 levels deep in all (docs/api.md). The bound also keeps the standard library's
recursive encoder far from the interpreter's recursion limit.
"""


class CanonicalError(ValueError):
    """A value that has no canonical JSON form (NaN, Infinity, a non-JSON type)."""


class NestingTooDeep(CanonicalError):
    """A value whose arrays/objects nest deeper than :data:`MAX_DEPTH` levels."""


def normalize(value: Any) -> Any:
    """Return ``value`` in canonical shape: integral floats as ints, dict keys sorted.

    Raises:
        NestingTooDeep: arrays/objects nest more than :data:`MAX_DEPTH` levels below the top.
        CanonicalError: any other value without a JSON form.
    """
    return _normalize(value, 0)


def _normalize(value: Any, level: int) -> Any:
    # Recursive for speed (this runs for every record), but never more than MAX_DEPTH + 1
    # frames deep: the level is checked before descending, whatever the input.
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise CanonicalError("NaN and Infinity have no JSON form")
        return int(value) if value.is_integer() else value
    if isinstance(value, list | tuple):
        if level > MAX_DEPTH:
            raise NestingTooDeep(f"arrays/objects nest more than {MAX_DEPTH} levels deep")
        return [_normalize(item, level + 1) for item in value]
    if isinstance(value, dict):
        if level > MAX_DEPTH:
            raise NestingTooDeep(f"arrays/objects nest more than {MAX_DEPTH} levels deep")
        normalized: dict[str, Any] = {}
        try:
            keys = sorted(value)
        except TypeError:  # keys of mixed types do not even compare
            keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise CanonicalError(f"object keys must be strings, got {type(key).__name__}")
            normalized[key] = _normalize(value[key], level + 1)
        return normalized
    raise CanonicalError(f"{type(value).__name__} is not a JSON value")


_SCALARS = frozenset({str, int, bool, type(None)})
_SORTED = msgspec.json.Encoder(order="sorted")  # thread-safe: verification runs in two worker threads


def is_plain(value: Any) -> bool:
    """True when ``value`` holds no float and no type JSON lacks, and nests at most :data:`MAX_DEPTH` levels.

    Exact types only (``type(x) is dict``, not ``isinstance``): a subclass could encode differently.
    For such a value, canonical JSON is a plain sorted encoding with nothing to normalise. An
    iterative walk, so no input can exhaust the stack.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return kind in _SCALARS
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        container, level = stack.pop()
        if level > MAX_DEPTH:
            return False
        if type(container) is dict:
            for key in container:
                if type(key) is not str:
                    return False
            items = container.values()
        else:
            items = container
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, level + 1))
            elif kind not in _SCALARS:
                return False
    return True


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (spec §2.3, vectors in §2.6).

    Raises:
        NestingTooDeep: arrays/objects nest more than :data:`MAX_DEPTH` levels below the top.
        CanonicalError: any other value without a JSON form.
        UnicodeEncodeError: a string holds a lone surrogate, which has no UTF-8 form.
    """
    if is_plain(value):
        try:
            return _SORTED.encode(value)
        except ValueError:  # a lone surrogate, an integer too long to print: the reference path says which
            pass
    return reference_canonical_json(value)


def reference_canonical_json(value: Any) -> bytes:
    """:func:`canonical_json` by the letter of spec §2.3: normalise, then the standard library's encoder.

    Used for every value that is not :func:`is_plain`, and by the tests as the reference.
    """
    text = json.dumps(
        normalize(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return text.encode("utf-8")
