"""Fork and merge on a real daemon (seed 003): a parent closes by itself when its join predicate holds.

One daemon, auth on, for the module. Records are emitted as a client would (``POST /v1/records``); the joiner
writes the parent's synthesising records ("child X completed with result Y") and the closing KNOW, signed by
the instance. ``kill -9`` between a child's close and its synthesis — the close committed while the daemon is
down, and a burst of closes cut by SIGKILL — still gives exactly one synthesising record per child close.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_support import envelope
from fed_support import wait_until

from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.daemon.launcher import DaemonProcess
from spl.store.database import connect_writer
from spl.store.ingest import commit_batch, load_writer_state

ACTOR = "did:test:deployer"
CLOCKS = itertools.count(1)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("joins") / "home", insecure=False)
    process.start(port=0)
    yield process
    process.kill()


def client(process: DaemonProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=process.url, headers={"x-api-key": process.admin_token}, timeout=20.0)


async def emit(http: httpx.AsyncClient, thread: str, act: str, body: dict[str, Any]) -> str:
    response = await http.post("/v1/records", json=envelope(thread, next(CLOCKS), actor=ACTOR, act=act, body=body))
    assert response.status_code in (200, 201), response.text
    record_id = response.json()["id"]
    assert isinstance(record_id, str)
    return record_id


async def records(http: httpx.AsyncClient, thread: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/threads/{thread}/records", params={"limit": 1000})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def kinds(thread_records: list[dict[str, Any]]) -> list[str]:
    return [
        str(r["body"].get("kind")) for r in thread_records if str(r["body"].get("kind", "")).startswith("core.join.")
    ]


async def state(http: httpx.AsyncClient, thread: str) -> str:
    response = await http.get(f"/v1/threads/{thread}")
    assert response.status_code == 200, response.text
    return str(response.json()["state"])


async def fork_children(http: httpx.AsyncClient, parent: str, join: Any, names: list[str]) -> dict[str, str]:
    """Open ``parent`` with ``join`` and fork one child per name; the children's opening INTEND ids."""
    await emit(http, parent, "INTEND", {"goal": f"parent {parent}", "join": join})
    opened = {}
    for name in names:
        child = f"{parent}.{name}"
        await emit(http, parent, "INTEND", {"goal": f"sub-thread {name}", "sub_thread": child})
        opened[child] = await emit(http, child, "INTEND", {"goal": name, "parent": parent})
    return opened


async def synthesis_count(http: httpx.AsyncClient, parent: str, expected: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = [r for r in await records(http, parent) if r["body"].get("kind") == "core.join.child_closed.v1"]
        return found if len(found) >= expected else None

    found: list[dict[str, Any]] = await wait_until(enough, 20.0, f"{expected} synthesising records on {parent}")
    return found


def test_seed_003_deploy_v2_closes_by_itself_under_all(daemon: DaemonProcess) -> None:
    async def scenario() -> None:
        async with client(daemon) as http:
            instance = (await http.get("/v1/identity")).json()["did"]
            parent = "th_deploy_v2"
            opener = await emit(http, parent, "INTEND", {"goal": "deploy v2", "join": "all"})
            children = {}
            for child, goal in (("th_run_tests", "run tests"), ("th_migrate_db", "migrate db")):
                await emit(http, parent, "INTEND", {"goal": f"sub-thread {goal}", "sub_thread": child})
                children[child] = await emit(http, child, "INTEND", {"goal": goal, "parent": parent})
            await emit(http, "th_run_tests", "KNOW", {"fulfills": children["th_run_tests"], "summary": "458/458 pass"})
            await synthesis_count(http, parent, 1)
            assert await state(http, parent) != "done"  # one child of two: the join does not hold yet
            await emit(
                http, "th_migrate_db", "KNOW", {"fulfills": children["th_migrate_db"], "summary": "migration complete"}
            )
            await wait_until(lambda: _is(http, parent, "done"), 20.0, "the parent closing")
            story = await records(http, parent)
            assert kinds(story) == ["core.join.child_closed.v1", "core.join.child_closed.v1", "core.join.closed.v1"]
            synthesised = {
                r["body"]["child"]: r["body"] for r in story if r["body"].get("kind") == "core.join.child_closed.v1"
            }
            assert synthesised["th_run_tests"]["result"] == "458/458 pass"
            assert synthesised["th_migrate_db"]["outcome"] == "done"
            assert "th_run_tests" in synthesised["th_run_tests"]["summary"]
            closing = story[-1]
            assert closing["body"]["fulfills"] == opener and closing["act"] == "KNOW"
            assert all(r["actor"] == instance and r["signer"] == instance for r in story if kinds([r]))
            shown = (await http.get(f"/v1/threads/{parent}")).json()
            assert shown["closed_by"] == closing["id"] and shown["anomalies"] == []

    trio.run(scenario)


async def _is(http: httpx.AsyncClient, thread: str, wanted: str) -> bool:
    return await state(http, thread) == wanted


def test_any_closes_at_the_first_accept_and_k_of_n_at_the_kth(daemon: DaemonProcess) -> None:
    async def scenario() -> None:
        async with client(daemon) as http:
            any_children = await fork_children(http, "th_any", "any", ["a", "b", "c"])
            (first, second, third) = any_children
            await emit(http, first, "DO", {"cancels": any_children[first], "reason": "flaky"})
            await synthesis_count(http, "th_any", 1)
            assert await state(http, "th_any") != "done"  # a rejected child does not satisfy any
            await emit(http, second, "KNOW", {"fulfills": any_children[second], "summary": "ok"})
            await wait_until(lambda: _is(http, "th_any", "done"), 20.0, "any: the parent closing")
            await emit(http, third, "KNOW", {"fulfills": any_children[third], "summary": "late"})
            await synthesis_count(http, "th_any", 3)  # a close after the join still gets its synthesis
            assert kinds(await records(http, "th_any")).count("core.join.closed.v1") == 1

            k_children = await fork_children(http, "th_k", {"mode": "k_of_n", "k": 2}, ["a", "b", "c"])
            threads = list(k_children)
            await emit(http, threads[0], "KNOW", {"fulfills": k_children[threads[0]], "summary": "1"})
            await synthesis_count(http, "th_k", 1)
            assert await state(http, "th_k") != "done"
            await emit(http, threads[2], "KNOW", {"fulfills": k_children[threads[2]], "summary": "2"})
            await wait_until(lambda: _is(http, "th_k", "done"), 20.0, "k_of_n: the parent closing at the 2nd")
            closing = (await records(http, "th_k"))[-1]["body"]
            assert closing["kind"] == "core.join.closed.v1" and closing["accepted"] == 2

            failing = await fork_children(http, "th_all_fails", "all", ["a", "b"])
            child = next(iter(failing))
            await emit(http, child, "KNOW", {"verdict": "reject", "reason": "tests red"})
            await wait_until(lambda: _is(http, "th_all_fails", "cancelled"), 20.0, "all: a rejected child ends it")
            assert kinds(await records(http, "th_all_fails"))[-1] == "core.join.failed.v1"

    trio.run(scenario)


def test_participants_get_their_roles_and_a_thread_not_opened_by_an_intend_is_flagged(daemon: DaemonProcess) -> None:
    """Seed 003 "Participants and roles": opener, reviewer (KNOW with a verdict), adapter (dispatch_handled),
    observer; and "a thread whose first clock is DO or KNOW ... is a bug or a partially-migrated import"."""

    async def scenario() -> None:
        async with client(daemon) as http:
            thread = "th_roles"
            for actor, act, body in (
                ("did:test:opener", "INTEND", {"goal": "ship"}),
                ("did:test:adapter", "DO", {"dispatch_handled": True, "summary": "ran it"}),
                ("did:test:adapter", "KNOW", {"dispatch_handled": True, "summary": "it ran"}),
                ("did:test:reviewer", "KNOW", {"verdict": "accept"}),
                ("did:test:observer", "PUT", {"note": "watching"}),
            ):
                response = await http.post(
                    "/v1/records", json=envelope(thread, next(CLOCKS), actor=actor, act=act, body=body)
                )
                assert response.status_code == 201, response.text
            shown = (await http.get(f"/v1/threads/{thread}")).json()
            roles = {
                p["actor"].removeprefix("did:test:"): (p["role"], p["record_count"]) for p in shown["participants"]
            }
            assert roles == {
                "opener": ("opener", 1),
                "adapter": ("adapter", 2),
                "reviewer": ("reviewer", 1),
                "observer": ("observer", 1),
            }
            assert shown["anomalies"] == []
            for odd, act in (("th_starts_with_do", "DO"), ("th_only_learn", "LEARN")):
                response = await http.post("/v1/records", json=envelope(odd, next(CLOCKS), actor=ACTOR, act=act))
                assert response.status_code == 201, response.text
                flagged = (await http.get(f"/v1/threads/{odd}")).json()
                assert flagged["anomalies"] == ["first_record_not_intend"]
                assert flagged["state"] == ("active" if act == "DO" else "unopened")

    trio.run(scenario)


def _close_offline(process: DaemonProcess, child: str, opener: str) -> str:
    """Commit a child's close straight into the stopped daemon's store, as if it was killed right after."""
    identity = process.home.load_identity()
    raw = envelope(child, 10**9, actor=ACTOR, act="KNOW", body={"fulfills": opener, "summary": "offline"})
    record = validate_envelope(raw)
    connection = connect_writer(process.home.db_path)
    try:
        state = load_writer_state(connection, identity.did)
        commit_batch(connection, [[Candidate(record, identity.did, identity.sign_record_id(record.id))]], state)
    finally:
        connection.close()
    return record.id


def test_kill_9_between_a_child_close_and_its_synthesis_leaves_exactly_one(daemon: DaemonProcess) -> None:
    names = [f"c{index}" for index in range(12)]

    async def prepare() -> dict[str, str]:
        async with client(daemon) as http:
            return await fork_children(http, "th_killed", "all", names)

    children = trio.run(prepare)
    threads = list(children)
    daemon.kill()  # SIGKILL: nothing flushed, nothing told
    _close_offline(daemon, threads[0], children[threads[0]])  # closed, never synthesised: the outbox holds it
    daemon.start(port=daemon.port)

    async def burst() -> None:
        async with client(daemon) as http:
            await synthesis_count(http, "th_killed", 1)  # the close committed while down is synthesised on start
            async with trio.open_nursery() as nursery:  # the rest at once, then SIGKILL mid-synthesis
                for child in threads[1:]:
                    nursery.start_soon(emit, http, child, "KNOW", {"fulfills": children[child], "summary": "ok"})

    trio.run(burst)
    daemon.kill()
    daemon.start(port=daemon.port)

    async def check() -> None:
        async with client(daemon) as http:
            found = await synthesis_count(http, "th_killed", len(threads))
            await wait_until(lambda: _is(http, "th_killed", "done"), 20.0, "the parent closing after the restarts")
            per_child = Counter(r["body"]["child"] for r in found)
            assert per_child == Counter(threads), per_child  # exactly one per close: none missed, none doubled
            assert kinds(await records(http, "th_killed")).count("core.join.closed.v1") == 1

    trio.run(check)


def test_no_record_is_left_waiting(daemon: DaemonProcess, tmp_path: Path) -> None:
    """After the module's scenarios the joiner's outbox is empty (read through a copy of the live store)."""
    import apsw

    copy = tmp_path / "hub.db"
    source = apsw.Connection(str(daemon.home.db_path))
    try:
        source.execute("PRAGMA wal_checkpoint")
        with apsw.Connection(str(copy)) as target, target.backup("main", source, "main") as backup:
            backup.step()
    finally:
        source.close()
    connection = apsw.Connection(str(copy))
    assert list(connection.execute("SELECT parent, child FROM join_outbox")) == []
