"""An attacker's pass over issue 12's surfaces: tasks, sub-threads, joins, the joiner, the kill switch, actors.

Every byte from a client or a peer is hostile. Each test is one attack; those marked ``xfail(strict=True)`` are
findings that succeed today (the mark comes off with the fix), the others are attacks that held and must keep
holding. Three drivers, cheapest first:

- the commit path in-process (``commit_batch`` on a scratch store), for what the projections keep;
- the joiner actor over that store (its real ``_settle``, with a writer that commits in-process);
- one real loopback daemon for the module (auth on, the real joiner), driven with a non-admin token as a
  hostile client would, plus the admin token for the legitimate owner.

The findings (numbered as in the report):

1. Any ``records:write`` client forges a child's outcome: ``POST /v1/records`` signs every client record with
   the instance key, and the commit counts a ``core.join.child_closed.v1`` KNOW as the joiner's synthesis when
   its *signer* is the instance, whatever its actor. The forged outcome is decided over, and the instance signs
   the parent's close; a forged synthesis naming the real close settles the outbox row (the real synthesis is
   never written).
2. A client may also emit records whose ``actor`` is the instance's DID (what a fix of 1 must not trust).
3. A child close is queued into at most 64 parents, chosen before the namespace filter: 64 forks from another
   namespace (or any 64 earlier forks) silently suppress the legitimate parent's synthesis, so its join never
   closes it.
4. A join over more than 1000 children is decided over the first 1000 (``fork_children``'s LIMIT): ``all``
   closes the parent as done while child 1001 is still open.
5. ``next_alias`` reads the longest ``TASK-`` alias: one task opened as ``TASK-zzzzzzzzzzzz`` (or
   ``TASK-999999999999``) makes every later ``spl task add`` without ``--alias`` a 409.
6. A schema upgrade's refold (``rebuild_threads``, no own DID) counts any synthesis whose signer is its actor:
   a peer's synthesis settles this instance's outbox row, so the real synthesis is never written.
7. A join predicate is replaced by the latest INTEND carrying ``join`` from anyone, a peer included.
8. ``GET /v1/actors/{did}`` scans every (thread, actor) row: no index leads with ``actor``.
9. ``POST /v1/threads/{parent}/fork`` writes the fork and the child in ``default`` whatever the parent's
   namespace: the child's close is never synthesised into a parent of another namespace, so it never joins.
10. A task alias may spell a thread id (``th_release``), and lookups try the alias first: anyone can shadow a
    thread in ``spl task show|done|cancel|fan-out``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio
from e2e_support import envelope
from fed_support import wait_until

from spl.actors.joiner import Joiner
from spl.actors.local import LocalRecords
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.daemon.launcher import DaemonProcess
from spl.store import queries
from spl.store import tasks as task_store
from spl.store.database import connect_writer, write_transaction
from spl.store.ingest import IngestRequest, commit_batch, load_writer_state
from spl.store.threads import rebuild_threads

OWN = Identity.generate()  # the instance of the in-process stores
PEER = Identity.generate()
SYNTHESIS = "core.join.child_closed.v1"
CLOCKS = itertools.count(1)

# --- the commit path, in-process -----------------------------------------------------------------------------


def candidate(
    thread: str, act: str, clock: int, body: dict[str, Any], *, actor: str = "did:test:a", signer: Identity = OWN
) -> Candidate:
    """A record as the commit sees it; signed by ``OWN`` by default, which is how POST /v1/records stores one."""
    checked = validate_envelope({"act": act, "actor": actor, "thread": thread, "clock": clock, "body": body})
    return Candidate(checked, signer.did, signer.sign_record_id(checked.id))


def commit(connection: apsw.Connection, records: Sequence[Candidate], *, pulled: bool = False) -> list[Any]:
    state = load_writer_state(connection, OWN.did)
    request = IngestRequest(records, ("pair_x", "c1"), "pair_x") if pulled else IngestRequest(records)
    (outcomes,) = commit_batch(connection, [request], state)
    return outcomes


def close(child: str, clock: int, opener: Candidate, summary: str = "ok") -> Candidate:
    return candidate(child, "KNOW", clock, {"fulfills": opener.envelope.id, "summary": summary})


def forged_synthesis(parent: str, child: str, closer: str, outcome: str, clock: int, **fields: Any) -> Candidate:
    body = {"kind": SYNTHESIS, "child": child, "child_closer": closer, "outcome": outcome, "result": "forged"}
    return candidate(parent, "KNOW", clock, body, **fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[apsw.Connection]:
    connection = connect_writer(tmp_path / "hub.db")
    yield connection
    connection.close()


def test_a_clients_forged_synthesis_settles_nothing(store: apsw.Connection) -> None:
    """A client's KNOW shaped like the joiner's (stored as POST /v1/records stores it) must not settle the row."""
    parent_open = candidate("th_parent", "INTEND", 1, {"goal": "p", "join": "all"})
    child_open = candidate("th_child", "INTEND", 1, {"goal": "c"})
    commit(store, [parent_open, candidate("th_parent", "INTEND", 2, {"sub_thread": "th_child"}), child_open])
    done = close("th_child", 2, child_open)
    commit(store, [done])
    assert [row.child for row in task_store.outbox(store)] == ["th_child"]
    commit(store, [forged_synthesis("th_parent", "th_child", done.envelope.id, "failed", 3, actor="did:test:mallory")])
    assert [row.child for row in task_store.outbox(store)] == ["th_child"]  # the real synthesis is still owed
    assert task_store.child_outcomes(store, "th_parent") == []  # and no outcome was taken from the forger


def _register_namespaces(connection: apsw.Connection, *names: str) -> None:
    for clock, namespace in enumerate(names, start=1):
        body = {"kind": NAMESPACE_KIND, "namespace_id": namespace, "status": "active"}
        commit(connection, [candidate(REGISTRY_THREAD, "LEARN", clock, body, actor=OWN.did)])


def test_forks_from_another_namespace_do_not_crowd_out_the_real_parent(store: apsw.Connection) -> None:
    """64 spy parents in ``public`` fork the child first; the real parent in ``team`` must still get its row."""
    _register_namespaces(store, "team", "public")
    child_open = candidate("th_target", "INTEND", 1, {"goal": "work", "namespace": "team"})
    commit(store, [child_open])
    spies = [
        record
        for index in range(64)
        for record in (
            candidate(f"th_spy{index}", "INTEND", 1, {"goal": "spy", "namespace": "public"}),
            candidate(f"th_spy{index}", "INTEND", 2, {"sub_thread": "th_target", "namespace": "public"}),
        )
    ]
    commit(store, spies)
    real = [
        candidate("th_real", "INTEND", 1, {"goal": "real", "join": "all", "namespace": "team"}),
        candidate("th_real", "INTEND", 2, {"sub_thread": "th_target", "namespace": "team"}),
    ]
    commit(store, real)
    commit(store, [close("th_target", 2, child_open)])
    assert [row.parent for row in task_store.outbox(store)] == ["th_real"]


def test_every_parent_that_lists_a_child_hears_of_its_close(store: apsw.Connection) -> None:
    """A child forked into 100 parents: each parent that counts it as a child is told, or it waits forever."""
    child_open = candidate("th_shared", "INTEND", 1, {"goal": "shared"})
    commit(store, [child_open])
    parents = [f"th_p{index:03d}" for index in range(100)]
    commit(
        store,
        [
            record
            for parent in parents
            for record in (
                candidate(parent, "INTEND", 1, {"goal": parent}),
                candidate(parent, "INTEND", 2, {"sub_thread": "th_shared"}),
            )
        ],
    )
    commit(store, [close("th_shared", 2, child_open)])
    listing = [parent for parent in parents if "th_shared" in task_store.fork_children(store, parent)]
    queued = {row.parent for row in task_store.outbox(store, 1000)}
    assert set(listing) <= queued, f"{len(set(listing) - queued)} parents list the child and will never hear of it"


def test_a_refold_does_not_take_a_peers_synthesis_for_ours(store: apsw.Connection) -> None:
    """Live, a peer's synthesis settles nothing; the schema upgrade's refold must say the same."""
    parent_open = candidate("th_parent", "INTEND", 1, {"goal": "p"})
    child_open = candidate("th_child", "INTEND", 1, {"goal": "c"})
    commit(store, [parent_open, candidate("th_parent", "INTEND", 2, {"sub_thread": "th_child"}), child_open])
    done = close("th_child", 2, child_open)
    commit(store, [done])
    peer_says = forged_synthesis("th_parent", "th_child", done.envelope.id, "failed", 5, actor=PEER.did, signer=PEER)
    commit(store, [peer_says], pulled=True)
    assert len(task_store.outbox(store)) == 1  # held live
    with write_transaction(store):
        rebuild_threads(store, own_did=OWN.did)  # as the daemon's upgrade does (connect_writer(own_did=…))
    assert len(task_store.outbox(store)) == 1, "after the refold the real synthesis is no longer owed"
    assert task_store.child_outcomes(store, "th_parent") == []


def test_a_peer_cannot_rewrite_a_parents_join(store: apsw.Connection) -> None:
    """The parent's owner asked for ``all``; a pulled INTEND naming ``any`` must not change what closes it."""
    commit(store, [candidate("th_parent", "INTEND", 1, {"goal": "p", "join": "all"})])
    hijack = candidate("th_parent", "INTEND", 7, {"goal": "x", "join": "any"}, actor=PEER.did, signer=PEER)
    commit(store, [hijack], pulled=True)
    assert task_store.join_spec(store, "th_parent")["join"] == "all"


def test_showing_one_actor_reads_an_index_not_every_participant_row(store: apsw.Connection) -> None:
    commit(store, [candidate(f"th_{index}", "PUT", 1, {}) for index in range(3)])
    plans = [str(row[3]) for row in store.execute("EXPLAIN QUERY PLAN " + _actor_sql(), ("did:test:a", 1))]
    assert not any(plan.startswith("SCAN thread_participants") for plan in plans), plans


def _actor_sql() -> str:
    """The statement ``queries.actor_listing(did=...)`` runs, captured from the connection."""
    captured: list[str] = []
    probe = apsw.Connection(":memory:")
    probe.execute(
        "CREATE TABLE thread_participants(thread TEXT, actor TEXT, record_count INTEGER, role_rank INTEGER, "
        "PRIMARY KEY (thread, actor)) WITHOUT ROWID"
    )

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        captured.append(sql)
        return True

    probe.exec_trace = trace
    queries.actor_listing(probe, did="did:test:a", limit=1)
    probe.close()
    (sql,) = captured
    return sql


def test_hostile_task_fields_are_bounded_in_the_index(store: apsw.Connection) -> None:
    """Held: a million-label opening, a megabyte title, non-string junk: the index keeps bounded values."""
    body = {
        "task": True,
        "alias": "TASK-0001",
        "goal": "g" * 100_000,
        "labels": [f"l{index}" for index in range(100_000)] + [{"x": 1}, 7],
        "criteria": ["c" * 10_000] * 1000,
        "assignee": "a" * 10_000,
        "priority": ["p"],
        "parent": "th_" + "x" * 1000,
    }
    commit(store, [candidate("th_big", "INTEND", 1, body)])
    row = task_store.task_row(store, "th_big")
    assert row is not None
    assert len(row["labels"]) == 32 and len(row["criteria"]) == 32 and len(row["title"]) == 2000
    assert len(row["assignee"]) == 128 and row["priority"] is None and len(row["parent"]) == 300
    (labels,) = next(iter(store.execute("SELECT COUNT(*) FROM task_labels")))
    assert labels == 32


# --- the joiner over an in-process store ---------------------------------------------------------------------


class _InProcessWriter:
    """The writer's commit, called directly (the joiner only ever asks it to ingest)."""

    def __init__(self, connection: apsw.Connection) -> None:
        self._connection = connection

    async def ingest(self, candidates: Sequence[Candidate], **_: Any) -> list[Any]:
        return commit(self._connection, candidates)


def _joiner(connection: apsw.Connection) -> Joiner:
    async def read(query: Any, *args: Any) -> Any:
        return query(connection, *args)

    writer: Any = _InProcessWriter(connection)
    return Joiner(read, LocalRecords(OWN, writer), writer)


def test_all_over_1001_children_waits_for_the_1001st(store: apsw.Connection) -> None:
    count = 1001
    records = [candidate("th_big_parent", "INTEND", 1, {"goal": "fan out wide", "join": "all"})]
    openers = []
    for index in range(count):
        child = f"th_kid{index:05d}"
        records.append(candidate("th_big_parent", "INTEND", index + 2, {"sub_thread": child}))
        openers.append(candidate(child, "INTEND", 1, {"goal": child}))
    commit(store, records + openers)
    commit(store, [close(opener.envelope.thread, 2, opener) for opener in openers[:-1]])  # all but the last
    *settled, last = task_store.outbox(store, count)
    own = {"actor": OWN.did, "signer": OWN}  # the joiner's own syntheses of the first 998 closes, as it writes them
    commit(
        store,
        [
            forged_synthesis(row.parent, row.child, row.closer, row.status, 10_000 + i, **own)
            for i, row in enumerate(settled)
        ],
    )
    trio.run(_joiner(store)._settle, [last])  # the joiner decides at the 1000th close
    (state,) = next(iter(store.execute("SELECT state FROM threads WHERE thread = 'th_big_parent'")))
    assert state not in ("done", "cancelled"), "the parent was closed while its 1001st child is open"


# --- one real daemon, a hostile client -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("attacks") / "home", insecure=False)
    process.start(port=0)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def hostile(daemon: DaemonProcess) -> str:
    """A token any integration holds: read and write records, nothing else."""
    response = httpx.post(
        f"{daemon.url}/v1/tokens",
        json={"scopes": ["records:read", "records:write"], "label": "mallory"},
        headers={"x-api-key": daemon.admin_token},
        timeout=10.0,
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


def _client(process: DaemonProcess, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=process.url, headers={"x-api-key": token}, timeout=20.0)


async def _emit(http: httpx.AsyncClient, thread: str, act: str, body: dict[str, Any], actor: str) -> httpx.Response:
    return await http.post("/v1/records", json=envelope(thread, next(CLOCKS), actor=actor, act=act, body=body))


async def _emit_ok(http: httpx.AsyncClient, thread: str, act: str, body: dict[str, Any], actor: str) -> str:
    response = await _emit(http, thread, act, body, actor)
    assert response.status_code in (200, 201), response.text
    record_id = response.json()["id"]
    assert isinstance(record_id, str)
    return record_id


async def _thread_records(http: httpx.AsyncClient, thread: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/threads/{thread}/records", params={"limit": 1000})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_a_client_cannot_forge_a_childs_outcome_and_have_the_instance_close_the_parent(
    daemon: DaemonProcess, hostile: str
) -> None:
    """Owner: parent (join all) with children a and b. Mallory says b is done; a closes; b is still open."""
    owner = "did:test:owner"

    async def scenario() -> None:
        async with _client(daemon, daemon.admin_token) as http, _client(daemon, hostile) as mallory:
            await _emit_ok(http, "th_forge_parent", "INTEND", {"goal": "release", "join": "all"}, owner)
            openers = {}
            for name in ("a", "b"):
                child = f"th_forge_parent.{name}"
                await _emit_ok(http, "th_forge_parent", "INTEND", {"sub_thread": child}, owner)
                openers[child] = await _emit_ok(http, child, "INTEND", {"goal": name}, owner)
            forged = {
                "kind": SYNTHESIS,
                "child": "th_forge_parent.b",
                "child_closer": "0" * 64,
                "outcome": "done",
                "result": "all green (trust me)",
            }
            refused = await _emit(mallory, "th_forge_parent", "KNOW", forged, "did:test:mallory")
            assert refused.status_code == 403 and refused.json()["code"] == "RESERVED_KIND", refused.text
            child_a = "th_forge_parent.a"
            await _emit_ok(http, child_a, "KNOW", {"fulfills": openers[child_a], "summary": "ok"}, owner)

            async def synthesised() -> bool:
                found = await _thread_records(http, "th_forge_parent")
                return any(r["body"].get("kind") == SYNTHESIS and r["body"].get("child") == child_a for r in found)

            await wait_until(synthesised, 20.0, "the joiner's synthesis of child a")
            shown = await http.get("/v1/threads/th_forge_parent")
            assert shown.status_code == 200, shown.text
            assert shown.json()["state"] not in ("done", "cancelled"), "closed on a forged outcome"

    trio.run(scenario)


def test_a_client_writing_as_the_instance_cannot_write_what_only_the_joiner_writes(
    daemon: DaemonProcess, hostile: str
) -> None:
    """Finding 2, decided: a record's actor is the writer's claim (the SDK's static identities; the CLI writes as
    the instance by default), vouched for by the instance's signature, not an authorisation. What must hold is
    that no client — even one claiming the instance's DID — can write the joiner's kinds, the only records the
    daemon treats as its own on ordinary threads."""

    async def scenario() -> None:
        async with _client(daemon, hostile) as mallory:
            identity = await mallory.get("/v1/identity")
            assert identity.status_code == 200, identity.text
            did = identity.json()["did"]
            for kind in (SYNTHESIS, "core.join.closed.v1", "core.join.failed.v1"):
                body = {
                    "kind": kind,
                    "child": "th_x",
                    "child_closer": "0" * 64,
                    "outcome": "done",
                    "fulfills": "0" * 64,
                }
                answer = await _emit(mallory, "th_as_instance", "KNOW", body, did)
                assert answer.status_code == 403 and answer.json()["code"] == "RESERVED_KIND", answer.text

    trio.run(scenario)


def test_one_odd_alias_does_not_stop_alias_allocation(daemon: DaemonProcess, hostile: str) -> None:
    async def scenario() -> None:
        async with _client(daemon, daemon.admin_token) as http, _client(daemon, hostile) as mallory:
            first = await http.post("/v1/tasks", json={"title": "before"})
            assert first.status_code == 201, first.text
            squat = {"task": True, "alias": "TASK-zzzzzzzzzzzzzzzz", "goal": "squat"}
            await _emit_ok(mallory, "th_alias_squat", "INTEND", squat, "did:test:mallory")
            after = await http.post("/v1/tasks", json={"title": "after"})
            assert after.status_code == 201, after.text

    trio.run(scenario)


def test_a_plain_client_cannot_move_the_kill_switch_or_write_configuration(daemon: DaemonProcess, hostile: str) -> None:
    """Held: kill, unkill, actor registration and records on reserved threads are refused to a records token."""

    async def scenario() -> None:
        async with _client(daemon, hostile) as mallory:
            for path, body in (
                ("/v1/fleet/kill", {"level": "hard", "reason": "x"}),
                ("/v1/fleet/unkill", {}),
                ("/v1/actors", {"did": "did:test:evil", "display_name": "ok", "category": "agent"}),
            ):
                answer = await mallory.post(path, json=body)
                assert answer.status_code == 403, (path, answer.text)
            for thread, kind in (("th_fleet_control", "core.fleet.freeze.v1"), ("th_actor_registry", "core.actor.v1")):
                freeze = {"kind": kind, "_v": 1, "level": "hard", "reason": "x"}
                answer = await _emit(mallory, thread, "LEARN", freeze, "did:test:mallory")
                assert answer.status_code == 403, (thread, answer.text)
            control = await mallory.get("/v1/fleet/control")
            assert control.status_code == 403, control.text
        async with _client(daemon, daemon.admin_token) as http:
            control = await http.get("/v1/fleet/control")
            assert control.status_code == 200 and control.json()["level"] == "none", control.text

    trio.run(scenario)


def test_a_fork_of_a_namespaced_parent_joins_it(daemon: DaemonProcess) -> None:
    """``POST /v1/threads/{parent}/fork`` on a parent in namespace ``team``: its child must close the parent."""
    owner = "did:test:owner"

    async def scenario() -> None:
        async with _client(daemon, daemon.admin_token) as http:
            created = await http.post("/v1/namespaces", json={"id": "team", "description": "a team"})
            assert created.status_code == 201, created.text
            parent = "th_team_parent"
            await _emit_ok(http, parent, "INTEND", {"goal": "ship", "namespace": "team"}, owner)
            forked = await http.post(f"/v1/threads/{parent}/fork", json={"goals": ["build"], "join": "all"})
            assert forked.status_code == 201, forked.text
            (child,) = [entry["thread"] for entry in forked.json()["children"]]
            shown = await http.get(f"/v1/threads/{child}")
            assert shown.status_code == 200, shown.text
            assert shown.json().get("namespace") == "team", shown.json()  # else its close never reaches the parent
            (opening,) = await _thread_records(http, child)
            await _emit_ok(http, child, "KNOW", {"fulfills": opening["id"], "namespace": "team"}, owner)

            async def closed() -> bool:
                answer = await http.get(f"/v1/threads/{parent}")
                return answer.status_code == 200 and answer.json()["state"] == "done"

            await wait_until(closed, 20.0, "the namespaced parent closing by its join")

    trio.run(scenario)


def test_an_alias_cannot_shadow_a_thread_id(daemon: DaemonProcess, hostile: str) -> None:
    """``spl task show th_release`` names the thread th_release, not a task someone aliased ``th_release``."""

    async def scenario() -> None:
        async with _client(daemon, daemon.admin_token) as http, _client(daemon, hostile) as mallory:
            mine = {"task": True, "alias": "REL-1", "goal": "release 1.0"}
            await _emit_ok(http, "th_release", "INTEND", mine, "did:test:owner")
            shadow = {"task": True, "alias": "th_release", "goal": "not the release"}
            await _emit_ok(mallory, "th_mallory_task", "INTEND", shadow, "did:test:mallory")
            shown = await http.get("/v1/tasks/th_release")
            assert shown.status_code == 200, shown.text
            assert shown.json()["thread"] == "th_release", "the lookup (and so done, cancel, fan-out) went elsewhere"

    trio.run(scenario)
