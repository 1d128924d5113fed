"""The per-thread projections the writer keeps at commit (``spl.store.threads``) against brute force.

Whatever the records and however they are split into transactions, the stored fold equals the
in-memory reference fold over the same records, each record's ordinal is its position in its thread,
``pending`` equals a count of what follows, a ``since=<clock>`` read equals a filter of the whole
thread, and a store upgraded from schema 2 gets exactly the projections a new store keeps. The reads
are checked for their query plans too: none may count or scan what it does not return.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core.fold import ThreadFold
from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.store import threads as thread_store
from spl.store.database import connect_writer
from spl.store.ingest import commit_batch, load_writer_state
from spl.store.queries import change_page, count_after, list_records, list_threads, thread_fold

OWN = Identity.generate()
ACTORS = ["did:test:a", "did:test:b", "did:test:c"]
THREADS = ["th_one", "th_two"]


@pytest.fixture
def small_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock mark every 3 records, so short generated threads exercise the marks."""
    monkeypatch.setattr(thread_store, "MARK_EVERY", 3)


def candidate(thread: str, actor: str, act: str, clock: int, body: dict[str, Any]) -> Candidate:
    envelope = validate_envelope({"act": act, "actor": actor, "thread": thread, "clock": clock, "body": body})
    return Candidate(envelope, OWN.did, OWN.sign_record_id(envelope.id))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Candidate], list[int]]:
    """Records over two threads whose bodies name earlier ids (or unknown ones), and a split into batches."""
    made: list[Candidate] = []
    clocks: dict[tuple[str, str], set[int]] = {}
    for _ in range(draw(st.integers(1, 40))):
        thread = draw(st.sampled_from(THREADS))
        actor = draw(st.sampled_from(ACTORS))
        act = draw(st.sampled_from(["INTEND", "DO", "KNOW", "CALL", "PUT"]))
        taken = clocks.setdefault((thread, actor), set())
        clock = draw(st.integers(0, 60).filter(lambda c, taken=taken: c not in taken))  # type: ignore[misc]
        taken.add(clock)
        earlier = [c.envelope.id for c in made]
        named = st.sampled_from(earlier) if earlier else st.just("f" * 64)
        body: dict[str, Any] = {}
        choice = draw(st.integers(0, 6))
        if choice == 1:
            body["fulfills"] = draw(named)
        elif choice == 2:
            body["cancels"] = draw(st.lists(st.one_of(named, st.integers()), max_size=3))
        elif choice == 3:
            body["verdict"] = draw(st.sampled_from(["accept", "reject", "maybe"]))
        elif choice == 4:
            body["fulfills"] = ["0" * 64, draw(named)]
        elif choice == 5:
            body["dispatch_handled"] = draw(st.sampled_from([True, "yes"]))  # only true earns the adapter role
        made.append(candidate(thread, actor, act, clock, body))
    cuts = sorted(draw(st.lists(st.integers(0, len(made)), max_size=4)))
    return made, cuts


def commit_in_batches(connection: apsw.Connection, records: list[Candidate], cuts: list[int]) -> None:
    """Commit ``records`` in transactions cut at ``cuts``; every other one starts from a state reloaded from disk."""
    state = load_writer_state(connection, OWN.did)
    bounds = [0, *cuts, len(records)]
    for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if index % 2:
            state = load_writer_state(connection, OWN.did)  # as after a restart: no cached rows, clock from disk
        if end > start:
            commit_batch(connection, [records[start:end]], state)


def stored(connection: apsw.Connection, thread: str) -> list[dict[str, Any]]:
    return [json.loads(r.json) for r in list_records(connection, thread=thread, limit=10_000)]


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("projections")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_projections_equal_brute_force(
    history: tuple[list[Candidate], list[int]], workdir: Path, small_marks: None
) -> None:
    records, cuts = history
    path = workdir / f"p{len(list(workdir.iterdir()))}.db"
    connection = connect_writer(path)
    commit_in_batches(connection, records, cuts)
    everything = [json.loads(r.json) for r in list_records(connection, limit=10_000)]
    for since in {-1, 0, *(r["clock"] for r in everything), 61}:
        for actor in (None, ACTORS[0]):
            expected = [r["id"] for r in everything if r["clock"] > since and actor in (None, r["actor"])]
            found = list_records(connection, actor=actor, since_clock=since, limit=10_000)
            assert [r.id for r in found] == expected
    for thread in THREADS:
        objects = stored(connection, thread)
        view = thread_fold(connection, thread)
        if not objects:
            assert view is None
            continue
        reference = ThreadFold(thread)
        for record in objects:
            reference.apply(record)
        assert view is not None
        assert {key: view[key] for key in reference.to_wire()} == reference.to_wire()
        assert view["record_count"] == len(objects) and view["first_sequence"] == objects[0]["sequence"]
        ordinals = [
            o for (o,) in connection.execute("SELECT ordinal FROM records WHERE thread = ? ORDER BY seq", (thread,))
        ]
        assert ordinals == list(range(1, len(objects) + 1))
        for index, record in enumerate(objects):
            assert count_after(connection, thread, record["sequence"]) == len(objects) - index - 1
        assert count_after(connection, thread, 0) == len(objects)
        for since in {-1, 0, *(r["clock"] for r in objects), 61}:
            expected = [r["id"] for r in objects if r["clock"] > since]
            assert [r.id for r in list_records(connection, thread=thread, since_clock=since, limit=10_000)] == expected
        for limit in (1, 2, 5):
            page = change_page(connection, thread, objects[0]["sequence"], limit)
            rest = objects[1:]
            assert [r.id for r in page.records] == [r["id"] for r in rest[:limit]]
            assert page.has_more == (len(rest) > limit)
            assert page.pending == (len(rest) - limit if len(rest) > limit else 0)
    connection.close()


def test_a_store_from_schema_2_gets_the_same_projections_once(tmp_path: Path, small_marks: None) -> None:
    records = [candidate("th_one", ACTORS[i % 3], ["INTEND", "DO", "KNOW"][i % 3], i, {}) for i in range(20)]
    records.append(candidate("th_one", ACTORS[1], "KNOW", 99, {"fulfills": records[0].envelope.id}))
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    commit_in_batches(connection, records, [7])
    expected = thread_fold(connection, "th_one")
    marks = list(connection.execute("SELECT * FROM clock_marks ORDER BY seq"))
    assert expected is not None and expected["state"] == "done" and len(marks) == 7 + 7  # the thread's, the store's
    # What a schema 2 store holds: no ordinals, no fold, no participants, no marks.
    connection.execute(
        "UPDATE records SET ordinal = 0; DELETE FROM thread_participants; DELETE FROM clock_marks; "
        "UPDATE threads SET state = 'empty', opened_by = NULL, closed_by = NULL, updated_at = 0; "
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'"
    )
    connection.close()
    connection = connect_writer(path)
    assert thread_fold(connection, "th_one") == expected
    assert load_writer_state(connection, OWN.did).clock.highest == 99
    assert list(connection.execute("SELECT * FROM clock_marks ORDER BY seq")) == marks
    assert [o for (o,) in connection.execute("SELECT ordinal FROM records ORDER BY seq")] == list(range(1, 22))


def plan(connection: apsw.Connection, sql: str, bindings: tuple[Any, ...]) -> list[str]:
    return [str(row[3]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", bindings)]


def test_reads_seek_instead_of_counting_or_scanning(tmp_path: Path) -> None:
    connection = connect_writer(tmp_path / "hub.db")
    commit_in_batches(connection, [candidate("th_one", ACTORS[0], "PUT", i, {}) for i in range(10)], [])
    traced: list[str] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        traced.append(sql)
        return True

    connection.exec_trace = trace
    change_page(connection, "th_one", 2, 3)
    list_records(connection, thread="th_one", since_clock=5, limit=3)
    thread_fold(connection, "th_one")
    list_threads(connection, limit=2)
    connection.exec_trace = None
    assert traced and not [sql for sql in traced if "COUNT(" in sql.upper()]
    for sql in traced:
        for step in plan(connection, sql.replace("?", "1"), ()):
            # A seek, or an index walked in the order asked for and cut by the LIMIT; never a table scan or a sort.
            assert step.startswith("SEARCH") or (step.startswith("SCAN") and "INDEX" in step), (sql, step)
            assert "TEMP B-TREE" not in step, (sql, step)
    marks = plan(
        connection,
        "SELECT seq FROM clock_marks WHERE thread = ? AND clock <= ? ORDER BY clock DESC, seq DESC LIMIT 1",
        ("th_one", 5),
    )
    assert marks == ["SEARCH clock_marks USING PRIMARY KEY (thread=? AND clock<?)"]
    intent = plan(connection, thread_store.INTENT_SQL, ('["x"]', "th_one", 5))
    assert intent[-1].startswith("SEARCH records USING INDEX sqlite_autoindex_records_1 (id=?"), intent


def test_a_fulfills_list_full_of_junk_still_finds_the_intent_it_names(tmp_path: Path) -> None:
    connection = connect_writer(tmp_path / "hub.db")
    opening = candidate("th_one", ACTORS[0], "INTEND", 1, {})
    junk: list[Any] = ["x" * 63, "y" * 65, 7, None, "f" * 64] * 2000
    closing = candidate("th_one", ACTORS[1], "KNOW", 2, {"fulfills": [*junk, opening.envelope.id]})
    commit_in_batches(connection, [opening, closing], [])
    view = thread_fold(connection, "th_one")
    assert view is not None and view["state"] == "done" and view["closed_by"] == closing.envelope.id
