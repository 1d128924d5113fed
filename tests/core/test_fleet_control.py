"""The kill switch's pure rules (``spl.core.fleet_control``): the fold of th_fleet_control and the refusal table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spl.core.errors import InvalidRequest
from spl.core.fleet_control import (
    FLEET_THREAD,
    LEVELS,
    MAX_REASON,
    ORIGINS,
    FleetFrozen,
    FleetState,
    check_reason,
    freeze_body,
    unfreeze_body,
)
from spl.core.genesis import genesis_body

OWN = "did:key:own"
ACTS = ("INTEND", "DO", "KNOW", "LEARN", "CALL")


def stored(body: dict[str, Any], seq: int, *, signer: str = OWN, act: str = "LEARN") -> dict[str, Any]:
    return {
        "id": f"{seq:064x}",
        "thread": FLEET_THREAD,
        "act": act,
        "actor": signer,
        "signer": signer,
        "clock": 1_767_225_600_000_000 + seq,  # 2026-01-01T00:00:00Z in microseconds, as system records count
        "body": body,
        "seq": seq,
    }


# A step of an operator's history: a freeze at some level or an unfreeze (None).
steps = st.lists(st.one_of(st.none(), st.sampled_from(LEVELS)), max_size=12)


@given(steps)
def test_any_sequence_folds_to_the_last_records_level(history: list[str | None]) -> None:
    records = [stored(genesis_body(FLEET_THREAD, OWN), 1, act="INTEND")]
    for seq, level in enumerate(history, start=2):
        body = unfreeze_body(f"step {seq}") if level is None else freeze_body(level, f"step {seq}")
        records.append(stored(body, seq))
    state = FleetState.folded(records, OWN)
    expected = "none" if not history or history[-1] is None else history[-1]
    assert state.level == expected
    if history:
        assert state.record_id == records[-1]["id"] and state.reason == f"step {len(history) + 1}"
        assert state.since == "2026-01-01T00:00:00Z"
    else:
        assert state.record_id is None and state.since is None  # the genesis record changes nothing


@given(steps, st.sampled_from(LEVELS))
def test_records_of_anyone_else_never_move_the_switch(history: list[str | None], forged: str) -> None:
    """A peer that got a record onto th_fleet_control (it cannot: reserved) still could not freeze or thaw us."""
    records = []
    for seq, level in enumerate(history, start=1):
        body = unfreeze_body("") if level is None else freeze_body(level, "")
        records.append(stored(body, seq))
    own = FleetState.folded(records, OWN)
    records.append(stored(freeze_body(forged, "forged"), 100, signer="did:key:peer"))
    records.append(stored(unfreeze_body("forged"), 101, signer="did:key:peer"))
    assert FleetState.folded(records, OWN) == own


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "core.fleet.freeze.v1", "_v": 1, "level": "total", "reason": ""},
        {"kind": "core.fleet.freeze.v1", "_v": 1, "reason": "no level"},
        {"kind": "core.fleet.freeze.v1", "_v": 1, "level": "hard", "reason": "x" * (MAX_REASON + 1)},
        {"kind": "core.fleet.freeze.v1", "_v": 1, "level": "hard", "reason": "line\nforged"},
        {"kind": "core.fleet.freeze.v1", "_v": 1, "level": "hard", "reason": 7},
        {"kind": "fleet.later", "_v": 1, "level": "hard"},
        "not an object",
    ],
)
def test_a_malformed_record_changes_nothing(body: Any) -> None:
    state = FleetState.folded([stored(freeze_body("soft", "kept"), 1), stored(body, 2)], OWN)
    assert (state.level, state.reason) == ("soft", "kept")
    assert not FleetState().apply("INTEND", freeze_body("hard", ""), "id", 1)  # only LEARN moves it


# The refusal table of docs/kill-switch.md: (level, origin, act) -> refused?
def expected_refusal(level: str, origin: str, act: str) -> bool:
    if level == "none" or origin == "system":
        return False
    if level == "soft":
        return act == "INTEND" and origin in ("client", "push", "pull", "import")
    return True  # hard and emergency: every origin but system


@pytest.mark.parametrize("level", ["none", *LEVELS])
def test_refusal_table(level: str) -> None:
    state = FleetState()
    if level != "none":
        state.apply("LEARN", freeze_body(level, "drill"), "r" * 64, 1_767_225_600_000_000)
    for origin in ORIGINS:
        for act in ACTS:
            refusal = state.refusal(origin, act)
            assert (refusal is not None) == expected_refusal(level, origin, act), (level, origin, act)
            if refusal is not None:
                assert isinstance(refusal, FleetFrozen) and refusal.status == 503
                assert refusal.code == f"FLEET_FROZEN_{level.upper()}"
                assert f"({level})" in refusal.message and "2026-01-01T00:00:00Z" in refusal.message
                assert "drill" in refusal.message and "spl unkill" in refusal.message
    # An import restores a whole log: any freeze refuses it.
    assert (state.error() is not None) == (level != "none")


def test_reason_is_bounded_and_printable() -> None:
    assert check_reason(None) == "" and check_reason("x" * MAX_REASON) == "x" * MAX_REASON
    for bad in ("x" * (MAX_REASON + 1), "a\x1b]0;pwned\x07", "two\nlines", ["list"]):
        with pytest.raises(InvalidRequest) as caught:
            check_reason(bad)
        assert caught.value.code == "INVALID_REASON"
    with pytest.raises(InvalidRequest):
        freeze_body("total", "")
