"""The served form of a record (``stored_json``): byte-identical to the standard library's ASCII-only JSON.

``stored_json`` encodes most records with msgspec and falls back to ``json.dumps`` for what msgspec
writes differently (floats, non-ASCII, DEL); these tests hold the result to the plain definition.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.record import Envelope
from spl.core.stored import parked_json, stored_json

TEXT = st.text(
    alphabet=st.sampled_from(["a", "_", "/", '"', "\\", "\x00", "\x1f", "\n", "\x7f", "é", "\u2028", "🎵", "\ue000"])
    | st.characters(),
    max_size=8,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1.0, 1e21, 1e-7, -0.0, 2.5])
    | TEXT
)
BODIES = st.dictionaries(
    TEXT,
    st.recursive(
        SCALARS,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
        max_leaves=16,
    ),
    max_size=5,
)


def reference(envelope: Envelope, *, signer: str, sig: str, seq: int, created_at: str) -> str:
    """The served form by its definition: the record object, then ``json.dumps`` with ASCII escapes."""
    record = {"object": "record", **envelope.fields()}
    if envelope.judged_by is not None:
        record["judged_by"] = envelope.judged_by
    record.update(namespace=envelope.namespace, signer=signer, sig=sig, sequence=seq, created_at=created_at)
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def envelope(body: dict[str, object], *, actor: str = "did:test:me", judged_by: str | None = None) -> Envelope:
    return Envelope(
        id="a" * 64,
        act="PUT",
        actor=actor,
        body=body,
        clock=7,
        data_type="SCALAR",
        parents=["b" * 64],
        thread="th_x",
        judged_by=judged_by,
    )


@settings(max_examples=500, deadline=None)
@given(BODIES, TEXT, st.booleans(), st.integers(min_value=1, max_value=2**62))
def test_stored_json_is_the_standard_library_form(body: dict[str, object], actor: str, judged: bool, seq: int) -> None:
    record = envelope(body, actor=actor or "x", judged_by="c" * 64 if judged else None)
    text = stored_json(record, signer="did:key:z6Mk", sig="s" * 86, seq=seq, created_at=1_700_000_000.25)
    assert text.isascii()
    assert text == reference(
        record, signer="did:key:z6Mk", sig="s" * 86, seq=seq, created_at="2023-11-14T22:13:20.250000Z"
    )


@pytest.mark.parametrize("body", [{"x": "\x7f"}, {"x": "é"}, {"x": "\u2028"}, {"x": 1.0}, {"x": [1e-7]}, {"x": 2**70}])
def test_what_msgspec_writes_differently_is_escaped_or_formatted_as_the_standard_library_does(
    body: dict[str, object],
) -> None:
    record = envelope(body)
    text = stored_json(record, signer="s", sig="g", seq=1, created_at=0.5)
    assert text == reference(record, signer="s", sig="g", seq=1, created_at="1970-01-01T00:00:00.500000Z")


def test_nan_and_lone_surrogates_are_refused_or_escaped_as_before() -> None:
    with pytest.raises(ValueError):
        stored_json(envelope({"x": float("nan")}), signer="s", sig="g", seq=1, created_at=0.0)
    text = stored_json(envelope({"x": "\ud800"}), signer="s", sig="g", seq=1, created_at=0.0)
    assert '"x":"\\ud800"' in text


def test_created_at_follows_every_change_of_the_commit_time() -> None:
    now = time.time()
    for moment in (now, now, now + 0.5, now, 0.0, 86_400.123456):
        text = stored_json(envelope({}), signer="s", sig="g", seq=1, created_at=moment)
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1_000_000):06d}Z"
        assert json.loads(text)["created_at"] == expected


def test_parked_json_has_no_sequence_or_time() -> None:
    parked = json.loads(parked_json(envelope({"k": "v"}), signer="s", sig="g"))
    assert "sequence" not in parked and "created_at" not in parked and parked["sig"] == "g"
