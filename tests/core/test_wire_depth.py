"""Deep nesting is refused by counting, not by recursing: the answer cannot depend on the caller's stack.

A record nested 950 levels used to be ``BODY_TOO_DEEP`` from a daemon but ``INVALID_JSON`` when decoded on a
deeper stack (in-process, under xdist), because the standard library's parser ran out of recursion first.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spl.core.errors import InvalidRecord, InvalidRequest
from spl.core.wire import MAX_JSON_DEPTH, decode_record, nesting_depth, parse_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\[]{}é', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k"[{\\', max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_the_count_matches_the_structure_whatever_the_strings_hold(value: Any) -> None:
    assert nesting_depth(json.dumps(value).encode()) == depth_of(value)


def nested_record(depth: int) -> bytes:
    body = "[" * (depth - 1) + "]" * (depth - 1)
    return (
        '{"act":"PUT","actor":"did:test:deep","thread":"t.deep","clock":1.5,"body":{"x":' + body + "}}"
    ).encode()  # clock 1.5 makes the typed decoder refuse, so the standard-library path runs


def decode_on_a_deep_stack(raw: bytes, frames: int) -> Exception:
    if frames:
        return decode_on_a_deep_stack(raw, frames - 1)
    try:
        decode_record(raw)
    except (InvalidRecord, InvalidRequest) as exc:
        return exc
    raise AssertionError("a record nested this deep was accepted")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 490, 950, 5000])
def test_too_deep_is_body_too_deep_at_any_stack_depth(depth: int) -> None:
    used = len(__import__("inspect").stack(0))
    for frames in (0, max(0, sys.getrecursionlimit() - used - 150)):
        error = decode_on_a_deep_stack(nested_record(depth), frames)
        assert getattr(error, "code", None) == "BODY_TOO_DEEP", (frames, error)


def test_other_bodies_are_held_to_the_same_depth() -> None:
    with pytest.raises(InvalidRecord) as refused:
        parse_json(b"[" * 2000 + b"]" * 2000)
    assert refused.value.code == "BODY_TOO_DEEP"
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
