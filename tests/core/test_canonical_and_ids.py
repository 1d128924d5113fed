"""Canonical JSON and record ids against every vector of spec §2.6."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from syncropel import canonical_json as sdk_canonical_json

from spl.core.canonical import (
    MAX_DEPTH,
    CanonicalError,
    NestingTooDeep,
    canonical_json,
    is_plain,
    reference_canonical_json,
)
from spl.core.errors import InvalidRecord
from spl.core.record import record_id, validate_envelope

V1 = {
    "act": "INTEND",
    "actor": "did:sync:user:alice",
    "body": {"goal": "Deploy the authentication service v2"},
    "clock": 0,
    "data_type": "SCALAR",
    "parents": [],
    "thread": "th_7f3a8b2c",
}
V2 = {
    "act": "PUT",
    "actor": "did:test:me",
    "body": {"title": "Glow", "kind": "music.catalog.track", "_v": 1},
    "clock": 1,
    "data_type": "SCALAR",
    "parents": [],
    "thread": "music.library",
}
V3 = {
    "act": "KNOW",
    "actor": "did:test:me",
    "body": {"z": 1.0, "a": {"y": [1, 2.5, "ü"], "x": None}, "kind": "core.outcome", "_v": 1},
    "clock": 1729000000001,
    "data_type": "SCALAR",
    "parents": ["b" * 64, "a" * 64],
    "thread": "th_" + "0" * 64,
}
V4_BODY_TEXT = (
    '{"name":"Zoë","emoji":"🎵","ctl":"\\u0007","tab":"a\\tb","q":"say \\"hi\\"","small":0.1,'
    '"tiny":1e-7,"big":1e21,"neg":-2.50,"kind":"x.test.sample","_v":1}'
)
V4 = {
    "act": "DO",
    "actor": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
    "body": json.loads(V4_BODY_TEXT),
    "clock": 1729000000000,
    "data_type": "VOID",
    "parents": [],
    "thread": "th_" + "ab" * 32,
}


def test_v1_is_already_canonical_and_hashes_seven_fields() -> None:
    text = (
        '{"act":"INTEND","actor":"did:sync:user:alice","body":{"goal":"Deploy the authentication service v2"},'
        '"clock":0,"data_type":"SCALAR","parents":[],"thread":"th_7f3a8b2c"}'
    )
    assert canonical_json(V1) == text.encode()
    assert record_id(V1) == "c5c11f41fc7c02f80ce1ae84a86f308317b4edd6ef1ad6af2e2862050f0cbc05"
    six = {key: value for key, value in V1.items() if key != "data_type"}
    assert record_id(six) == "01570b052c72324b341f1afcbed668c3899f5bc08fe60ace33d2ee1ac4d22e1f"
    assert validate_envelope(V1).id == "c5c11f41fc7c02f80ce1ae84a86f308317b4edd6ef1ad6af2e2862050f0cbc05"


def test_v2_sdk_emit() -> None:
    expected = (
        '{"act":"PUT","actor":"did:test:me","body":{"_v":1,"kind":"music.catalog.track","title":"Glow"},'
        '"clock":1,"data_type":"SCALAR","parents":[],"thread":"music.library"}'
    )
    assert canonical_json(V2) == expected.encode()
    assert validate_envelope(V2).id == "0821a443f992d4bed825069846e74da3fdbf8d00ebef5447e6fa370cd128acc0"


def test_v3_integral_floats_unicode_and_parent_order() -> None:
    assert canonical_json(V3["body"]) == (
        '{"_v":1,"a":{"x":null,"y":[1,2.5,"ü"]},"kind":"core.outcome","z":1}'.encode()
    )
    assert record_id(V3) == "60c098a0bcadca7b433aa847b71d185684de33ccf2a3cbd71b555a903bc165ea"
    # The server sorts parents (spec §15.4): the "sorted" id is the canonical one.
    envelope = validate_envelope(V3)
    assert envelope.parents == ["a" * 64, "b" * 64]
    assert envelope.id == "7703cc2ca6f8ac12559136cdbab0b5fb85f188186940835da448005405d312f8"


def test_v4_control_characters_emoji_and_float_forms() -> None:
    body = canonical_json(V4["body"])
    assert (
        body
        == (
            '{"_v":1,"big":1000000000000000000000,"ctl":"\\u0007","emoji":"🎵","kind":"x.test.sample",'
            '"name":"Zoë","neg":-2.5,"q":"say \\"hi\\"","small":0.1,"tab":"a\\tb","tiny":1e-07}'
        ).encode()
    )
    assert len(canonical_json(V4)) == 390
    assert validate_envelope(V4).id == "4ca09572378113aeb973817cc1eb9305ffcc140053c636c3c90f4f236b5f3f8d"


def test_defaults_are_filled_before_hashing() -> None:
    partial = {key: value for key, value in V1.items() if key not in ("parents", "data_type", "body")}
    envelope = validate_envelope(partial)
    assert (envelope.body, envelope.parents, envelope.data_type) == ({}, [], "SCALAR")
    assert envelope.id == record_id({**partial, "body": {}, "parents": [], "data_type": "SCALAR"})


def test_judged_by_and_unknown_keys_do_not_change_the_id() -> None:
    extra = {**V2, "judged_by": "c" * 64, "sig": "x", "object": "record", "whatever": 1}
    assert validate_envelope(extra).id == validate_envelope(V2).id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"act": "SHOUT"}, "act"),
        ({"act": ""}, "act"),
        ({"actor": 7}, "actor"),
        ({"thread": "has space"}, "thread"),
        ({"thread": "x" * 257}, "thread"),
        ({"clock": -1}, "clock"),
        ({"clock": 2**63}, "clock"),
        ({"clock": "1"}, "clock"),
        ({"clock": 1.5}, "clock"),
        ({"clock": True}, "clock"),
        ({"body": []}, "body"),
        ({"data_type": "BLOB"}, "data_type"),
        ({"parents": "abc"}, "parents"),
        ({"parents": ["nothex"]}, "parents"),
        ({"judged_by": "nothex"}, "judged_by"),
        ({"body": {"namespace": 3}}, "body.namespace"),
    ],
)
def test_invalid_fields_are_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate_envelope({**V2, **change})
    assert caught.value.field == field
    assert caught.value.message.startswith(field)


def test_missing_required_fields_are_named() -> None:
    for field in ("act", "actor", "thread", "clock"):
        payload = {key: value for key, value in V2.items() if key != field}
        with pytest.raises(InvalidRecord) as caught:
            validate_envelope(payload)
        assert caught.value.field == field


def test_nan_has_no_canonical_form() -> None:
    with pytest.raises(CanonicalError):
        canonical_json({"x": float("nan")})
    with pytest.raises(InvalidRecord):
        validate_envelope({**V2, "body": {"x": float("inf")}})


def nested(levels: int) -> list[object]:
    """``levels`` arrays, each inside the one before: ``nested(2) == [[]]``."""
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_nesting_is_bounded_and_never_exhausts_the_stack() -> None:
    # Below the top-level value, MAX_DEPTH levels are canonical; one more is refused, and so is
    # any depth at all (a list 500 deep used to raise RecursionError, a 500 on the wire).
    assert canonical_json({"body": nested(MAX_DEPTH)}) == b'{"body":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    for levels in (MAX_DEPTH + 1, 500, 950, 100_000):
        with pytest.raises(NestingTooDeep):
            canonical_json({"body": nested(levels)})
    with pytest.raises(NestingTooDeep):
        canonical_json({"body": {"a": nested(MAX_DEPTH)}})  # objects count like arrays


def test_a_record_body_may_nest_64_levels() -> None:
    assert validate_envelope({**V2, "body": {"x": nested(MAX_DEPTH - 1)}}).id  # body itself is level 1
    for levels in (MAX_DEPTH, 490, 950):
        with pytest.raises(InvalidRecord) as caught:
            validate_envelope({**V2, "body": {"x": nested(levels)}})
        assert caught.value.code == "BODY_TOO_DEEP" and caught.value.field == "body"
        assert f"{MAX_DEPTH} levels" in caught.value.message


def test_keys_of_mixed_types_are_a_canonical_error() -> None:
    with pytest.raises(CanonicalError):
        canonical_json({1: "a", "b": 2})


# -- the fast path: msgspec's sorted encoder for values without floats ---------------------------------

# Text that exercises every escaping rule: controls (short and \u00XX forms), quotes, backslash, DEL,
# non-ASCII, U+2028/U+2029, astral characters and U+E000-U+FFFF (which sort differently in UTF-16).
TRICKY_TEXT = st.text(
    alphabet=st.sampled_from(
        ["a", "Z", "_", "/", '"', "\\", "\x00", "\x07", "\b", "\t", "\n", "\x1f", "\x7f", "é", "\u2028", "\ue000"]
        + ["\uffff", "🎵", "\U0010ffff"]
    )
    | st.characters(),
    max_size=8,
)
PLAIN_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63 - 2, max_value=2**70) | TRICKY_TEXT
)
ANY_SCALARS = (
    PLAIN_SCALARS
    | st.floats()
    | st.sampled_from([1.0, -0.0, 1e21, 1e-7, 1e300, 2.5, 1e16, 0.1, float("nan"), float("inf")])
)


def json_values(scalars: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4),
        max_leaves=24,
    )


def outcome(encode: object, value: object) -> tuple[str, object]:
    """What ``encode(value)`` gives: its bytes, or the type of what it raised."""
    try:
        return "bytes", encode(value)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the type of any error is what is compared
        return "raised", type(exc)


@settings(max_examples=600, deadline=None)
@given(json_values(ANY_SCALARS))
def test_canonical_json_matches_the_reference_and_the_sdk_byte_for_byte(value: object) -> None:
    fast = outcome(canonical_json, value)
    assert fast == outcome(reference_canonical_json, value)
    if fast[0] == "bytes":
        assert fast[1] == sdk_canonical_json(value).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(json_values(PLAIN_SCALARS))
def test_values_without_floats_are_plain_and_encoded_by_msgspec(value: object) -> None:
    assert is_plain(value)
    assert outcome(canonical_json, value) == outcome(reference_canonical_json, value)


@pytest.mark.parametrize(
    "value",
    [
        {"x": 1.0},
        [0.5],
        {"a": {"b": [1, 2, {"c": 1e21}]}},
        {1: "a"},
        {"t": (1, 2)},
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"x": nested(MAX_DEPTH + 1)},
    ],
)
def test_floats_other_types_and_deep_nesting_are_not_plain(value: object) -> None:
    assert not is_plain(value)


def test_plain_depth_bound_is_the_canonical_one() -> None:
    assert is_plain({"body": nested(MAX_DEPTH)})
    assert not is_plain({"body": nested(MAX_DEPTH + 1)})
    with pytest.raises(NestingTooDeep):
        canonical_json({"body": nested(MAX_DEPTH + 1)})


def test_errors_of_plain_values_come_from_the_reference_path() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"x": "\ud800"})  # a lone surrogate: no UTF-8 form, whichever encoder tries
    with pytest.raises(ValueError):
        canonical_json({"x": 10**5000})  # beyond Python's int-to-text limit
