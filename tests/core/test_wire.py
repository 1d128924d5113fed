"""Typed decoders at HTTP ingress (``spl.core.wire``): fast when the body is right, and exactly as
helpful as the field rules when it is not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.errors import InvalidRequest, SplError
from spl.core.record import Envelope, validate_envelope
from spl.core.wire import (
    MAX_PUSH_RECORDS,
    decode_namespace_create,
    decode_push,
    decode_record,
    decode_token_mint,
    parse_json,
)


def by_field_rules(raw: bytes) -> Envelope | tuple[str, str]:
    """What the dict path (stdlib JSON, then ``validate_envelope``) makes of ``raw``: an envelope or (code, message)."""
    try:
        return validate_envelope(parse_json(raw))
    except SplError as exc:
        return exc.code, exc.message


def by_wire(raw: bytes) -> Envelope | tuple[str, str]:
    try:
        return decode_record(raw)
    except SplError as exc:
        return exc.code, exc.message


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
GOOD = {
    "act": st.sampled_from(["PUT", "LEARN", "put", ""]),
    "actor": st.sampled_from(["did:test:a", "", "x" * 513]),
    "thread": st.sampled_from(["th_a", "th a", "", "x" * 257]),
    "clock": st.sampled_from([0, 1, 5.0, 5.5, -1, 2**63 - 1, 2**63, 2**64, True, "1"]),
    "body": st.none() | st.dictionaries(st.sampled_from(["namespace", "k", "n"]), JSON_VALUES, max_size=3),
    "data_type": st.sampled_from([None, "SCALAR", "VOID", "scalar"]),
    "parents": st.sampled_from([None, [], ["a" * 64], ["b" * 64, "a" * 64, "a" * 64], ["nope"], "a" * 64]),
    "judged_by": st.sampled_from([None, "c" * 64, "C" * 64, 5]),
    "id": st.text(max_size=4),
}


@settings(max_examples=400, deadline=None)
@given(
    fields=st.fixed_dictionaries({}, optional=GOOD),
    mutations=st.dictionaries(st.sampled_from(sorted(GOOD)), JSON_VALUES, max_size=2),
)
def test_the_typed_decoder_agrees_with_the_field_rules(fields: dict[str, Any], mutations: dict[str, Any]) -> None:
    """Same envelope (hence the same id), or the same error code and message, for any payload."""
    raw = json.dumps({**fields, **mutations}).encode()
    assert by_wire(raw) == by_field_rules(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"[1]",
        b'{"act":"PUT"',
        b'{"act":NaN}',
        b"\xff\xfe",
        b'{"act":"PUT","actor":"a","thread":"t","clock":1,"body":{"s":"\\ud800"}}',
        b'{"act":"PUT","actor":"a","thread":"t","clock":1,"body":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"act":"PUT","actor":"a","thread":"t","clock":1,"body":{"x":' + b"[" * 80 + b"]" * 80 + b"}}",
        b'{"act":"PUT","actor":"a","thread":"t","clock":1e2}',
        b'{"act":"PUT","actor":"a","thread":"t","clock":1,"body":{"n":1e400}}',
    ],
    ids=["empty", "blank", "array", "truncated", "nan", "not-utf8", "surrogate", "too-deep", "deep", "1e2", "inf"],
)
def test_bodies_msgspec_refuses_get_the_field_rules_answer(raw: bytes) -> None:
    assert by_wire(raw) == by_field_rules(raw)


def test_a_record_is_decoded_with_its_defaults_and_its_id() -> None:
    raw = b'{"act":"PUT","actor":"did:test:a","thread":"th_a","clock":3,"parents":null,"id":"ignored"}'
    envelope = decode_record(raw)
    assert envelope == validate_envelope({"act": "PUT", "actor": "did:test:a", "thread": "th_a", "clock": 3})
    assert envelope.body == {} and envelope.data_type == "SCALAR" and envelope.parents == []


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (b"[]", "INVALID_REQUEST", '{"id": "acme/ops"'),
        (b"{}", "INVALID_NAMESPACE", "is required"),
        (b'{"id":5}', "INVALID_NAMESPACE", "is required"),
        (b'{"id":null,"namespace":"acme"}', "INVALID_NAMESPACE", "is required"),
        (b'{"id":"acme","description":7}', "INVALID_REQUEST", "description must be a string"),
        (b'{"id":"Acme"}', "INVALID_NAMESPACE", "lowercase"),
    ],
)
def test_namespace_create_refusals_name_the_fix(raw: bytes, code: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_namespace_create(raw)
    assert refused.value.code == code and words in refused.value.message


def test_namespace_create_takes_id_or_the_older_key() -> None:
    assert decode_namespace_create(b'{"id":"acme/ops","description":"d"}') == ("acme/ops", "d")
    assert decode_namespace_create(b'{"namespace":"acme"}') == ("acme", "")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"label":"x"}', "INVALID_SCOPES"),
        (b'{"scopes":[]}', "INVALID_SCOPES"),
        (b'{"scopes":"admin"}', "INVALID_SCOPES"),
        (b'{"scopes":["root"]}', "INVALID_SCOPES"),
        (b'{"scopes":["admin"],"label":5}', "INVALID_LABEL"),
        (b'{"scopes":["admin"],"label":"\\ud800"}', "INVALID_LABEL"),
        (b'{"scopes":["admin"],"label":"bell \\u0007"}', "INVALID_LABEL"),
        (b'{"scopes":["admin"],"env":7}', "INVALID_ENV"),
        (b'{"scopes":["admin"],"env":"\xc3\xb6"}', "INVALID_ENV"),
        (b"[]", "INVALID_REQUEST"),
    ],
)
def test_token_mint_refusals_carry_the_rule_code(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_token_mint(raw)
    assert refused.value.code == code


def test_token_mint_lowercases_the_env_and_keeps_a_unicode_label() -> None:
    mint = decode_token_mint('{"scopes":["records:read"],"label":"Zoë 🎵","env":"CI"}'.encode())
    assert (mint.scopes, mint.label, mint.env) == (["records:read"], "Zoë 🎵", "ci")


def test_a_push_holds_at_most_the_page_limit() -> None:
    assert decode_push(b'{"records":[{"id":"x"},3]}') == [{"id": "x"}, 3]
    for raw in (b"{}", b'{"records":{}}', b"[]", json.dumps({"records": [0] * (MAX_PUSH_RECORDS + 1)}).encode()):
        with pytest.raises(InvalidRequest) as refused:
            decode_push(raw)
        assert "at most 10000" in refused.value.message
