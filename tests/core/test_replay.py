"""``spl.core.replay``: the record-by-record walk ends where the folds the store runs end."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core import joins
from spl.core import tasks as task_fold
from spl.core.fold import ThreadFold
from spl.core.replay import replay

TASK_OPENING = {"goal": "ship", "task": True, "alias": "TASK-0001", "nonce": "n"}


def record(index: int, act: str, body: Any, actor: str = "did:a:one") -> dict[str, Any]:
    return {"id": f"r{index:04d}", "sequence": index + 1, "act": act, "actor": actor, "clock": index, "body": body}


def test_a_task_walk_names_each_transition_and_the_join_decisions() -> None:
    bodies = [
        ("INTEND", TASK_OPENING),
        ("DO", {"task_event": "start"}),
        ("KNOW", {"task_event": "block", "reason": "review"}),
        ("INTEND", {"goal": "sub-thread: build", "sub_thread": "th_child", "join": "all"}),
        ("KNOW", joins.synthesis_body(joins.ChildOutcome("th_child", "done", "built", "c1"))),
        ("KNOW", {"kind": joins.CLOSED_KIND, "fulfills": "r0000", "join": "all", "accepted": 1, "total": 1}),
    ]
    steps = replay([record(i, act, body) for i, (act, body) in enumerate(bodies)])
    assert [(s.thread_before, s.thread_after) for s in steps][:2] == [("unopened", "open"), ("open", "active")]
    assert [s.task_after for s in steps] == ["open", "active", "blocked", "blocked", "blocked", "done"]
    assert steps[0].task_before is None and steps[0].role == "opener"
    assert steps[4].join is not None and steps[4].join["child"] == "th_child" and steps[4].join["outcome"] == "done"
    assert steps[5].join == {"kind": joins.CLOSED_KIND, "join": "all", "accepted": 1, "total": 1}
    assert steps[5].to_wire()["task"] == {"before": "blocked", "after": "done"}
    assert steps[2].event == "block" and steps[4].kind == joins.SYNTHESIS_KIND


def test_only_the_threads_opening_intend_makes_it_a_task() -> None:
    plain = replay([record(0, "INTEND", {"goal": "g"}), record(1, "INTEND", TASK_OPENING), record(2, "DO", [])])
    assert [s.task_after for s in plain] == [None, None, None]
    # A thread whose first record is a DO (an anomaly) still opens at its first INTEND, as the store folds it.
    late = replay([record(0, "DO", {}), record(1, "INTEND", TASK_OPENING), record(2, "DO", "not a dict")])
    assert [s.task_after for s in late] == [None, "open", "active"]
    assert [s.thread_after for s in late] == ["active", "active", "active"]


acts = st.sampled_from(["INTEND", "DO", "KNOW", "CALL", "LEARN", "PUT"])
values = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.sampled_from(["start", "fail", "block", "reopen", "comment", "accept", "reject", "r0000", "r0002"]),
    st.lists(st.sampled_from(["r0000", "r0001", "r0003", "zz"]), max_size=3),
)
bodies = st.dictionaries(
    st.sampled_from(["task_event", "fulfills", "cancels", "verdict", "dispatch_handled", "kind"]), values, max_size=3
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(st.tuples(acts, bodies, st.sampled_from(["did:a:1", "did:a:2"])), max_size=30))
def test_the_walk_ends_in_the_thread_folds_and_the_task_folds_state(
    as_task: bool, tail: list[tuple[str, dict[str, Any], str]]
) -> None:
    first = [("INTEND", dict(TASK_OPENING) if as_task else {"goal": "g"}, "did:a:1")]
    records = [record(i, act, body, actor) for i, (act, body, actor) in enumerate(first + tail)]
    steps = replay(records)

    reference = ThreadFold("th_x")
    for item in records:
        reference.apply(item)
    assert steps[-1].thread_after == reference.state

    head = task_fold.open_task(TASK_OPENING, "r0000")
    intents = {"r0000"}
    for item in records[1:]:
        task_fold.step(head, item["act"], item["body"], item["id"], lambda ids: any(i in intents for i in ids))
        if item["act"] == "INTEND":
            intents.add(item["id"])
    assert steps[-1].task_after == (head.status if as_task else None)
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.thread_before == before.thread_after and after.task_before == before.task_after
