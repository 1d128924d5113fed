"""The task fold (``spl.core.tasks``): a table of transitions, and properties over any record sequence."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core import tasks
from spl.core.errors import InvalidRequest

OPENER = "r-open"


def head(status: str = "open") -> tasks.TaskHead:
    return tasks.TaskHead(alias="TASK-0001", status=status, opened_by=OPENER)


def is_intent(ids: Any) -> bool:
    return OPENER in ids


START = ("DO", {"task_event": "start"})
DONE = ("KNOW", {"fulfills": OPENER, "summary": "ok"})
FAIL = ("KNOW", {"task_event": "fail", "reason": "red"})
CANCEL = ("DO", {"cancels": OPENER, "reason": "gone"})
BLOCK = ("KNOW", {"task_event": "block", "reason": "wait"})
REOPEN = ("INTEND", {"task_event": "reopen", "reopens": OPENER})
COMMENT = ("KNOW", {"task_event": "comment", "text": "hi"})
OBSERVE = ("KNOW", {"note": "seen"})
REJECT = ("KNOW", {"verdict": "reject"})
CALL = ("CALL", {})

TABLE = [
    ("open", START, "active"),
    ("open", DONE, "done"),
    ("open", FAIL, "failed"),
    ("open", CANCEL, "cancelled"),
    ("open", BLOCK, "blocked"),
    ("open", OBSERVE, "observed"),
    ("open", CALL, "active"),
    ("open", COMMENT, "open"),
    ("open", REOPEN, "open"),
    ("open", REJECT, "cancelled"),
    ("active", OBSERVE, "observed"),
    ("active", START, "active"),
    ("observed", START, "active"),
    ("observed", CALL, "observed"),
    ("blocked", START, "active"),
    ("blocked", CALL, "active"),
    ("blocked", OBSERVE, "blocked"),
    ("blocked", DONE, "done"),
    ("done", START, "done"),
    ("done", FAIL, "done"),
    ("done", REOPEN, "open"),
    ("failed", DONE, "failed"),
    ("failed", REOPEN, "open"),
    ("cancelled", START, "cancelled"),
    ("cancelled", REOPEN, "open"),
]


@pytest.mark.parametrize(("before", "record", "after"), TABLE)
def test_transition_table(before: str, record: tuple[str, dict[str, Any]], after: str) -> None:
    task = head(before)
    act, body = record
    changed = tasks.step(task, act, body, "r-next", is_intent)
    assert task.status == after
    assert changed == (after if after != before else None)


def test_done_needs_an_intent_of_the_thread_and_terminal_records_keep_the_closer() -> None:
    task = head()
    assert tasks.step(task, "KNOW", {"fulfills": "someone-else"}, "r1", is_intent) == "observed"
    tasks.step(task, "KNOW", {"fulfills": OPENER}, "r2", is_intent)
    assert (task.status, task.closed_by) == ("done", "r2")
    tasks.step(task, "INTEND", {"task_event": "reopen"}, "r3", is_intent)
    assert (task.status, task.closed_by, task.reason) == ("open", None, None)


def test_validation_names_the_fix() -> None:
    with pytest.raises(InvalidRequest, match="title"):
        tasks.validate_task_fields({"title": " "})
    with pytest.raises(InvalidRequest, match="labels"):
        tasks.validate_task_fields({"title": "x", "labels": [1]})
    with pytest.raises(InvalidRequest, match="TASK-0042"):
        tasks.validate_alias("th_" + "a" * 64)
    body = tasks.validate_task_fields({"title": "x", "labels": "one", "priority": "P1"})
    assert body == {"goal": "x", "labels": ["one"], "priority": "P1"}
    assert tasks.alias_number(tasks.format_alias(42)) == 42 and tasks.alias_number("REL-1") is None


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["task_event", "fulfills", "cancels", "verdict", "reason", "summary", "kind"]),
        st.one_of(
            json_scalars,
            st.sampled_from(["start", "fail", "block", "comment", "reopen", "reject", OPENER]),
            st.lists(st.sampled_from([OPENER, "x"]), max_size=3),
        ),
        max_size=4,
    ),
    json_scalars,
    st.lists(json_scalars, max_size=2),
)
records = st.lists(
    st.tuples(st.sampled_from(["INTEND", "DO", "KNOW", "CALL", "GET", "PUT", "MAP", "LEARN", "??"]), bodies),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_any_record_sequence_folds_and_terminal_states_are_left_only_by_reopen(
    sequence: list[tuple[str, Any]],
) -> None:
    task = head()
    for index, (act, body) in enumerate(sequence):
        before = task.status
        tasks.step(task, act, body, f"r{index}", is_intent)
        assert task.status in tasks.STATUSES
        if before in tasks.TERMINAL and task.status != before:
            assert act == "INTEND" and isinstance(body, dict) and body.get("task_event") == "reopen"
            assert task.status == "open"
