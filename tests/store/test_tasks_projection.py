"""The task index, sub-thread links and the joiner's outbox, as the commit keeps them (``spl.store.tasks``).

Whatever the records and however they are split into transactions (and reloaded in between, as after a
restart), the ``tasks`` rows equal the pure task fold over the same records; a rebuild from the records gives
the same tables; a child close is queued for its parent exactly once, whether the fork or the close arrives
first, in one transaction or several; only this instance's synthesising record settles the queue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core import tasks as task_fold
from spl.core.errors import SplError
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import validate_envelope
from spl.core.stored import Accepted, Candidate
from spl.store import tasks as task_store
from spl.store.database import connect_writer, write_transaction
from spl.store.ingest import IngestRequest, commit_batch, load_writer_state
from spl.store.threads import rebuild_threads

OWN = Identity.generate()
PEER = Identity.generate()
ACTORS = ["did:test:a", "did:test:b"]


def candidate(
    thread: str, act: str, clock: int, body: dict[str, Any], *, actor: str = "did:test:a", signer: Identity = OWN
) -> Candidate:
    envelope = validate_envelope({"act": act, "actor": actor, "thread": thread, "clock": clock, "body": body})
    return Candidate(envelope, signer.did, signer.sign_record_id(envelope.id))


def opening(thread: str, alias: str, clock: int = 1, **fields: Any) -> Candidate:
    return candidate(thread, "INTEND", clock, {"task": True, "alias": alias, "goal": f"do {alias}", **fields})


def tables(connection: apsw.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: sorted(connection.execute(f"SELECT * FROM {table}"))  # noqa: S608 - the test's own table names
        for table in ("tasks", "task_labels", "sub_threads", "thread_joins", "join_outbox", "child_outcomes")
    }


def commit(connection: apsw.Connection, records: Sequence[Candidate], *, pulled: bool = False) -> list[Any]:
    state = load_writer_state(connection, OWN.did)
    request = IngestRequest(records, ("pair_x", "c1"), "pair_x") if pulled else IngestRequest(records)
    (outcomes,) = commit_batch(connection, [request], state)
    return outcomes


@pytest.fixture
def connection(tmp_path: Path) -> apsw.Connection:
    return connect_writer(tmp_path / "hub.db")


# --- the task index equals the fold --------------------------------------------------------------------------


@st.composite
def task_histories(draw: st.DrawFn) -> tuple[list[Candidate], list[int]]:
    """Records on two task threads: events, closes naming earlier ids (or not), and a split into batches."""
    threads = ["th_task_a", "th_task_b"]
    made = [opening(thread, f"T-{index}", labels=["x"]) for index, thread in enumerate(threads)]
    clock = 10
    for _ in range(draw(st.integers(0, 30))):
        thread = draw(st.sampled_from(threads))
        act = draw(st.sampled_from(["INTEND", "DO", "KNOW", "CALL", "LEARN"]))
        body: dict[str, Any] = {}
        choice = draw(st.integers(0, 6))
        intends = [c.envelope.id for c in made if c.envelope.thread == thread and c.envelope.act == "INTEND"]
        if choice == 1:
            body["task_event"] = draw(st.sampled_from([*task_fold.EVENTS, "bogus", 3]))
        elif choice == 2:
            body["fulfills"] = draw(st.sampled_from([*intends, "0" * 64]))
        elif choice == 3:
            body["cancels"] = draw(st.sampled_from(intends))
        elif choice == 4:
            body["verdict"] = draw(st.sampled_from(["accept", "reject"]))
        elif choice == 5:
            body["reason"] = draw(st.text(max_size=5))
        clock += 1
        made.append(candidate(thread, act, clock, body, actor=draw(st.sampled_from(ACTORS))))
    cuts = sorted(draw(st.lists(st.integers(0, len(made)), max_size=4)))
    return made, cuts


def reference(records: list[Candidate], thread: str) -> task_fold.TaskHead:
    mine = [c.envelope for c in records if c.envelope.thread == thread]
    head = task_fold.open_task(mine[0].body, mine[0].id)
    intents: set[str] = {mine[0].id}
    for envelope in mine[1:]:
        task_fold.step(head, envelope.act, envelope.body, envelope.id, lambda ids: any(i in intents for i in ids))
        if envelope.act == "INTEND":
            intents.add(envelope.id)
    return head


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=task_histories())
def test_the_task_index_equals_the_fold_however_the_commits_are_cut(
    tmp_path_factory: pytest.TempPathFactory, history: tuple[list[Candidate], list[int]]
) -> None:
    records, cuts = history
    connection = connect_writer(tmp_path_factory.mktemp("tasks") / "hub.db")
    bounds = [0, *cuts, len(records)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        if end > start:
            commit(connection, records[start:end])
    for thread in ("th_task_a", "th_task_b"):
        row = task_store.task_row(connection, thread)
        expected = reference(records, thread)
        assert row is not None and row["status"] == expected.status
        assert (row["closed_by"], row["reason"], row["alias"]) == (expected.closed_by, expected.reason, expected.alias)
    before = tables(connection)
    with write_transaction(connection):
        rebuild_threads(connection)
    assert tables(connection) == before


def test_a_task_is_listed_found_by_alias_and_filtered_from_the_index(connection: apsw.Connection) -> None:
    commit(connection, [opening("th_t1", "TASK-0001", assignee="did:test:b", labels=["ops", "db"])])
    commit(connection, [opening("th_t2", "TASK-0002", labels=["ops"])])
    commit(connection, [candidate("th_t2", "DO", 5, {"task_event": "start"})])
    assert [t["alias"] for t in task_store.list_tasks(connection)] == ["TASK-0002", "TASK-0001"]
    assert [t["alias"] for t in task_store.list_tasks(connection, status="active")] == ["TASK-0002"]
    assert [t["alias"] for t in task_store.list_tasks(connection, label="db")] == ["TASK-0001"]
    assert [t["alias"] for t in task_store.list_tasks(connection, label="ops", assignee="did:test:b")] == ["TASK-0001"]
    first = task_store.list_tasks(connection, limit=1)
    assert [t["alias"] for t in task_store.list_tasks(connection, before_seq=first[0]["opened_sequence"])] == [
        "TASK-0001"
    ]
    found = task_store.task_by_alias(connection, "TASK-0001")
    assert found is not None and found["thread"] == "th_t1" and found["labels"] == ["ops", "db"]
    assert found["created_at"].endswith("Z")
    assert task_store.next_alias(connection) == "TASK-0003"
    commit(connection, [opening("th_t3", "TASK-0010")])
    assert task_store.next_alias(connection) == "TASK-0011"


@pytest.mark.parametrize("label", [None, "ops"])
@pytest.mark.parametrize("status", [None, "open"])
def test_listing_tasks_never_scans_the_records(
    connection: apsw.Connection, label: str | None, status: str | None
) -> None:
    plans: list[str] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        if sql.lstrip().upper().startswith("SELECT"):
            plans.extend(str(row[3]) for row in connection.execute("EXPLAIN QUERY PLAN " + sql, bindings))
        return True

    connection.exec_trace = trace
    task_store.list_tasks(connection, label=label, status=status)
    connection.exec_trace = None
    assert plans and not any(plan.startswith("SCAN records") or plan == "SCAN t" for plan in plans), plans


def test_a_local_task_cannot_take_an_alias_a_peer_can(connection: apsw.Connection) -> None:
    commit(connection, [opening("th_t1", "TASK-0001")])
    with pytest.raises(SplError) as refused:
        commit(connection, [opening("th_t9", "TASK-0001")])
    assert refused.value.code == "TASK_ALIAS_TAKEN" and "th_t1" in refused.value.message
    with pytest.raises(SplError):  # two in one transaction: the second is refused too
        commit(connection, [opening("th_a", "DUP-1"), opening("th_b", "DUP-1")])
    (pulled,) = commit(connection, [opening("th_peer", "TASK-0001", clock=7)], pulled=True)
    assert isinstance(pulled, Accepted)  # a peer's task keeps its alias; the first holder keeps answering to it
    found = task_store.task_by_alias(connection, "TASK-0001")
    assert found is not None and found["thread"] == "th_t1"


# --- forks, closes and the outbox ----------------------------------------------------------------------------


def fork(parent: str, child: str, clock: int, join: Any = None) -> Candidate:
    body: dict[str, Any] = {"goal": f"sub-thread {child}", "sub_thread": child}
    if join is not None:
        body["join"] = join
    return candidate(parent, "INTEND", clock, body)


def close(child: str, clock: int, opener: Candidate, summary: str = "ok") -> Candidate:
    return candidate(child, "KNOW", clock, {"fulfills": opener.envelope.id, "summary": summary})


def synthesis(parent: str, row: task_store.OutboxRow, clock: int, signer: Identity = OWN) -> Candidate:
    body = {
        "kind": "core.join.child_closed.v1",
        "child": row.child,
        "child_closer": row.closer,
        "outcome": row.status,
        "result": row.result,
    }
    return candidate(parent, "KNOW", clock, body, actor=signer.did, signer=signer)


@pytest.mark.parametrize("order", ["fork-first", "close-first", "one-transaction"])
def test_a_child_close_is_queued_once_whatever_arrives_first(connection: apsw.Connection, order: str) -> None:
    parent_open = candidate("th_parent", "INTEND", 1, {"goal": "deploy v2", "join": "all"})
    child_open = candidate("th_child", "INTEND", 1, {"goal": "run tests", "parent": "th_parent"})
    link = fork("th_parent", "th_child", 2)
    done = close("th_child", 3, child_open, "458/458 pass")
    if order == "fork-first":
        for record in (parent_open, link, child_open, done):
            commit(connection, [record])
    elif order == "close-first":
        for record in (child_open, done, parent_open, link):
            commit(connection, [record])
    else:
        commit(connection, [child_open, done, parent_open, link])
    rows = task_store.outbox(connection)
    assert [(r.parent, r.child, r.closer, r.status, r.result) for r in rows] == [
        ("th_parent", "th_child", done.envelope.id, "done", "458/458 pass")
    ]
    commit(connection, [done])  # a re-delivery of the close queues nothing more
    assert len(task_store.outbox(connection)) == 1
    spec = task_store.join_spec(connection, "th_parent")
    assert spec["join"] == "all" and spec["opened_by"] == parent_open.envelope.id

    commit(connection, [synthesis("th_parent", rows[0], 10, signer=PEER)], pulled=True)
    assert len(task_store.outbox(connection)) == 1  # someone else's synthesis settles nothing
    commit(connection, [synthesis("th_parent", rows[0], 11)])
    assert task_store.outbox(connection) == []
    assert task_store.child_outcomes(connection, "th_parent") == [("th_child", "done", "458/458 pass", rows[0].closer)]
    (child,) = task_store.children(connection, "th_parent")
    assert child["outcome"] == {"status": "done", "result": "458/458 pass", "closer": rows[0].closer}

    before = tables(connection)
    with write_transaction(connection):
        rebuild_threads(connection)  # the schema upgrade's path: the same queue, the same outcomes
    assert tables(connection) == before


def test_a_task_child_that_fails_is_queued_as_failed_and_a_reopened_child_closes_again(
    connection: apsw.Connection,
) -> None:
    commit(connection, [candidate("th_p", "INTEND", 1, {"goal": "p"}), fork("th_p", "th_c", 2)])
    child = opening("th_c", "C-1")
    commit(connection, [child, candidate("th_c", "KNOW", 3, {"task_event": "fail", "reason": "disk full"})])
    (row,) = task_store.outbox(connection)
    assert (row.status, row.result) == ("failed", "disk full")
    commit(connection, [synthesis("th_p", row, 4)])
    reopen = candidate("th_c", "INTEND", 5, {"task_event": "reopen"})
    commit(connection, [reopen, close("th_c", 6, child, "fixed")])
    (again,) = task_store.outbox(connection)
    assert (again.status, again.result) == ("done", "fixed") and again.closer != row.closer


def test_hostile_fork_bodies_link_nothing(connection: apsw.Connection) -> None:
    bodies: list[dict[str, Any]] = [
        {"sub_thread": "th_p"},  # itself
        {"sub_thread": "th_fleet_control"},  # a reserved thread
        {"sub_thread": "bad thread!"},
        {"sub_thread": ["th_x"]},
        {"sub_thread": "x" * 300},
        {"join": {"mode": "cel", "expr": "x" * 5000}},
    ]
    commit(connection, [candidate("th_p", "INTEND", index + 1, body) for index, body in enumerate(bodies)])
    assert task_store.fork_children(connection, "th_p") == []
    assert json.loads(json.dumps(task_store.join_spec(connection, "th_p")["join"])) == "invalid"


def test_a_thread_of_another_namespace_forked_into_a_parent_is_never_synthesised_there(
    connection: apsw.Connection,
) -> None:
    """Anyone may name any thread as a sub_thread: its outcome must not cross into another namespace's parent."""
    for clock, namespace in enumerate(("secret", "public"), start=1):
        body = {"kind": NAMESPACE_KIND, "namespace_id": namespace, "status": "active"}
        commit(connection, [candidate(REGISTRY_THREAD, "LEARN", clock, body, actor=OWN.did)])
    victim_open = candidate("th_victim", "INTEND", 1, {"goal": "secret work", "namespace": "secret"})
    commit(connection, [victim_open])
    commit(connection, [candidate("th_spy", "INTEND", 1, {"goal": "spy", "namespace": "public"})])
    commit(connection, [candidate("th_spy", "INTEND", 2, {"sub_thread": "th_victim", "namespace": "public"})])
    commit(connection, [close("th_victim", 2, victim_open, "the launch codes")])
    assert task_store.outbox(connection) == []  # closed after the fork: not queued
    commit(connection, [candidate("th_spy", "INTEND", 3, {"sub_thread": "th_victim", "namespace": "public"})])
    late_child = candidate("th_late", "INTEND", 1, {"goal": "x", "namespace": "secret"})
    commit(connection, [late_child, close("th_late", 2, late_child)])
    commit(connection, [candidate("th_spy", "INTEND", 4, {"sub_thread": "th_late", "namespace": "public"})])
    assert task_store.outbox(connection) == []  # closed before the fork: not queued either
    same = candidate("th_mine", "INTEND", 1, {"goal": "mine", "namespace": "public"})
    commit(connection, [same, candidate("th_spy", "INTEND", 5, {"sub_thread": "th_mine", "namespace": "public"})])
    commit(connection, [close("th_mine", 2, same)])
    assert [row.child for row in task_store.outbox(connection)] == ["th_mine"]  # the same namespace still is
