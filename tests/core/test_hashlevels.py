"""Hash levels L0–L3: the SDK's algorithm exactly (spec §2.12, §15.17), so a receiver can check a projection."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from syncropel.hashing import hash_levels as sdk_hash_levels

from spl.core.canonical import MAX_DEPTH
from spl.core.hashlevels import LEVEL_NAMES, hash_levels
from spl.core.record import ACTS, validate_envelope

SPEC_BODY = {"operation": "db.query", "input_shape": "ONE", "output_shape": "MANY", "table": "users", "limit": 100}


def sdk(act: str, body: dict[str, Any]) -> dict[str, str]:
    levels = sdk_hash_levels(act, body)
    return {"L0": levels.l0, "L1": levels.l1, "L2": levels.l2, "L3": levels.l3}


def test_spec_vectors_effect_get_one_to_many() -> None:
    # §2.12: the parameters sit beside operation and the shapes in the body, which is how the SDK reads them.
    assert hash_levels("GET", SPEC_BODY) == {
        "L0": "5acfda22056ef5e45d43b3b11663db6ad02f7e276806e59c3ff48bd61518af5e",
        "L1": "10ff61fd1b8d5b8515845259bef91c5e49673ed74ea638bc03ccee4e0a836c17",  # the SDK's: L1 includes "d"
        "L2": "84754e08fcf3b064a2ec21ab101d862c8430b20d1f03ca50b29d1602abe07dd0",
        "L3": "79dfd1971fcf0ba43a2a3cf499a86afa15872c8bad21c3009c8dc135042769de",
    }


def test_levels_are_coarser_as_they_go_up() -> None:
    """Changing a parameter moves only L0; the domain moves L1 too; the act L2; a shape every level."""
    base = hash_levels("GET", SPEC_BODY)
    other_param = hash_levels("GET", {**SPEC_BODY, "limit": 5})
    other_domain = hash_levels("GET", {**SPEC_BODY, "domain": "billing"})
    other_act = hash_levels("PUT", SPEC_BODY)
    other_shape = hash_levels("GET", {**SPEC_BODY, "output_shape": "ONE"})
    assert [base[level] == other_param[level] for level in LEVEL_NAMES] == [False, True, True, True]
    assert [base[level] == other_domain[level] for level in LEVEL_NAMES] == [False, False, True, True]
    assert [base[level] == other_act[level] for level in LEVEL_NAMES] == [False, False, False, True]
    assert [base[level] == other_shape[level] for level in LEVEL_NAMES] == [False, False, False, False]


def test_defaults_operation_is_the_lowercase_act_and_shapes_are_void() -> None:
    assert hash_levels("KNOW", {}) == hash_levels(
        "KNOW", {"operation": "know", "input_shape": "VOID", "output_shape": "VOID"}
    )
    assert hash_levels("KNOW", {}) == sdk("KNOW", {})


def test_a_body_at_the_deepest_nesting_a_record_allows_has_levels() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):  # the body is level 1; this value sits below it at the deepest allowed level
        deep = [deep]
    body = {"operation": deep, "params": deep}
    validate_envelope({"act": "DO", "actor": "did:a", "thread": "th_x", "clock": 0, "body": body})
    assert hash_levels("DO", body) == sdk("DO", body)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e21, 1e-7, 1.0, -0.0, 2.5, 1e300, 123456789.125])
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=16,
)
special_keys = st.sampled_from(["operation", "input_shape", "output_shape", "domain", "kind", "namespace", "_v"])
bodies = st.dictionaries(special_keys | st.text(max_size=8), json_values, max_size=8)


@settings(max_examples=400, deadline=None)
@given(act=st.sampled_from(ACTS) | st.text(min_size=1, max_size=8), body=bodies)
def test_same_levels_as_the_sdk_for_any_body(act: str, body: dict[str, Any]) -> None:
    assert hash_levels(act, body) == sdk(act, body)
