"""Policy cursors (``f1.<seq>.<policy>``): the cursor of a filtered feed names the policy it was served under.

The source starts a filtered feed over when the consent or pair policy changed since the
cursor was issued (docs/federation-pairs.md, "Consent"), so the policy must survive the round
trip exactly; and since a cursor comes from a client, any text at all must decode or be a 400
``INVALID_CURSOR`` — never another exception, never a number outside 0..2^63-1.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.cursor import (
    MAX_POLICY,
    MAX_SEQUENCE,
    decode_any_cursor,
    decode_cursor,
    encode_cursor,
    encode_policy_cursor,
)
from spl.core.errors import InvalidRequest, SplError

numbers = st.integers(0, 2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(numbers, numbers)
def test_a_policy_cursor_round_trips(sequence: int, policy: int) -> None:
    cursor = encode_policy_cursor(sequence, policy)
    assert decode_any_cursor(cursor) == (sequence, policy)
    assert cursor.isascii() and cursor.isprintable() and len(cursor) <= 3 + 19 + 1 + 19


@settings(max_examples=300, deadline=None)
@given(numbers)
def test_plain_cursors_decode_with_no_policy(sequence: int) -> None:
    assert decode_any_cursor(encode_cursor(sequence)) == (sequence, None)
    assert decode_any_cursor(str(sequence)) == (sequence, None)  # an SSE event id


def test_the_start_decodes_with_no_policy_and_sequence_zero_keeps_its_policy() -> None:
    assert decode_any_cursor("") == decode_any_cursor(None) == decode_any_cursor("0") == (0, None)
    assert encode_policy_cursor(0, 0) == "f1.0.0" and decode_any_cursor("f1.0.0") == (0, 0)
    assert encode_policy_cursor(0, 7) != encode_policy_cursor(0, 70) != encode_policy_cursor(7, 0)
    assert decode_any_cursor(f"f1.{MAX_SEQUENCE}.{MAX_POLICY}") == (MAX_SEQUENCE, MAX_POLICY)


def test_the_plain_decoder_refuses_a_policy_cursor() -> None:
    """A plain feed (``thread=`` with an unbound token) never takes a filtered feed's cursor as its own."""
    with pytest.raises(InvalidRequest) as caught:
        decode_cursor(encode_policy_cursor(5, 1))
    assert caught.value.code == "INVALID_CURSOR"


@pytest.mark.parametrize("sequence, policy", [(-1, 0), (0, -1), (2**63, 0), (0, 2**63)])
def test_encoding_out_of_range_is_a_bug_not_a_cursor(sequence: int, policy: int) -> None:
    with pytest.raises(SplError) as caught:
        encode_policy_cursor(sequence, policy)
    assert caught.value.status == 500 and not isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize(
    "garbage",
    [
        "f1.",
        "f1.5",
        "f1.5.",
        "f1..5",
        "f1.5.3.4",
        "f1.-1.0",
        "f1.1.-1",
        "f1.+1.0",
        "f1.1.+0",
        "f1. 1.0",
        "f1.1.0 ",
        "f1.0x1.0",
        "F1.1.0",
        "f2.1.0",
        "f1.\u0661.0",  # Arabic-Indic digit: isdigit() but not ASCII
        "f1.1.\u00b2",
        f"f1.{2**63}.0",
        f"f1.0.{2**63}",
        "f1.99999999999999999999.0",
        "f1.0.99999999999999999999",
        "f1." + "9" * 5000 + ".0",
        "f1.0." + "9" * 5000,
        "s1.5.1",
    ],
)
def test_malformed_policy_cursors_are_a_400_that_names_the_fix(garbage: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_any_cursor(garbage)
    assert caught.value.status == 400 and caught.value.code == "INVALID_CURSOR"
    assert "cursor" in caught.value.message and len(caught.value.message) < 200


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text().map(lambda tail: "f1." + tail),
        st.text(alphabet="0123456789.-+ f1s", max_size=50),
        st.tuples(st.integers(), st.integers()).map(lambda pair: f"f1.{pair[0]}.{pair[1]}"),
        st.tuples(numbers, numbers).map(lambda pair: f"f1.00{pair[0]}.0{pair[1]}"),
    )
)
def test_any_text_decodes_in_range_or_is_a_400(text: str) -> None:
    try:
        sequence, policy = decode_any_cursor(text)
    except InvalidRequest as refused:
        assert refused.code == "INVALID_CURSOR"
        return
    assert 0 <= sequence <= MAX_SEQUENCE
    assert policy is None or 0 <= policy <= MAX_POLICY
    if policy is not None:
        assert decode_any_cursor(encode_policy_cursor(sequence, policy)) == (sequence, policy)
