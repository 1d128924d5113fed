"""Federation between real daemons on loopback: pairs, convergence, crashes, outages, forgeries, auth.

Every daemon is a real ``spl serve`` process (``DaemonProcess``); the fixtures kill them all
in teardown. Every wait polls a condition against a deadline (``wait_until``); nothing
sleeps to let something happen. Pairs poll every 0.2 s.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import trio
from fake_peer import FakePeer
from fed_support import all_records, envelope, signed, thread_count, wait_until

from spl.core.cursor import decode_cursor, encode_cursor
from spl.core.identity import Identity, verify_record_signature
from spl.core.pair_machine import PAGE_LIMIT
from spl.daemon.launcher import DaemonProcess
from spl.store.database import connect_reader

POLL = 0.2
JSON = {"content-type": "application/json"}  # every write route needs it, body or not (spec §15.19)
PAIR_ID = re.compile(r"^pair_[0-9a-f]{16}$")

# -- nodes -------------------------------------------------------------------------------------------


@dataclass
class Node:
    process: DaemonProcess
    did: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return self.process.url

    async def start(self) -> None:
        """(Re)start on the same home and port."""
        await trio.to_thread.run_sync(self.process.start)

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.process.stop)

    async def kill(self) -> None:
        await trio.to_thread.run_sync(self.process.kill)


async def start_node(factory: type[DaemonProcess], name: str, *, insecure: bool = True) -> Node:
    process = factory(name, insecure=insecure)
    await trio.to_thread.run_sync(functools.partial(process.start, port=0))
    headers = {} if insecure else {"authorization": f"Bearer {process.admin_token}"}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{process.url}/v1/identity", headers=headers)
    return Node(process, response.json()["did"], headers)


def client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32), **kwargs)


async def emit(http: httpx.AsyncClient, node: Node, record: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"{node.url}/v1/records", json=record, headers=node.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def emit_bulk(
    http: httpx.AsyncClient, node: Node, thread: str, count: int, *, workers: int = 16, tag: str = "bulk"
) -> list[str]:
    """``count`` records from ``workers`` concurrent clients; returns their ids."""
    ids: list[str] = []

    async def worker(index: int) -> None:
        for n in range(index, count, workers):
            record = await emit(http, node, envelope(thread, n + 1, actor=f"did:test:{tag}{index}"))
            ids.append(record["id"])

    async with trio.open_nursery() as nursery:
        for index in range(workers):
            nursery.start_soon(worker, index)
    return ids


async def push_backlog(http: httpx.AsyncClient, node: Node, thread: str, count: int) -> list[str]:
    """A large backlog on ``node``, fast: records signed by a third instance, pushed in batches."""
    origin = Identity.generate()
    records = await trio.to_thread.run_sync(
        lambda: [signed(origin, thread, n + 1, actor="did:test:backlog") for n in range(count)]
    )
    for start in range(0, count, 2000):
        batch = records[start : start + 2000]
        response = await http.post(f"{node.url}/v1/sync/records", json={"records": batch}, headers=node.headers)
        assert response.status_code == 200, response.text[:500]
        assert len(response.json()["accepted"]) == len(batch)
    return [record["id"] for record in records]


async def create_pair(
    http: httpx.AsyncClient, on: Node, source: Node | str, thread: str, *, peer_did: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A pair on ``on`` that pulls ``thread`` from ``source`` (a node, or a URL with ``peer_did``)."""
    peer_url = source.url if isinstance(source, Node) else source
    did = source.did if isinstance(source, Node) else peer_did
    payload = {"peer_did": did, "peer_url": peer_url, "thread_id": thread, "poll_interval": POLL, **extra}
    response = await http.post(f"{on.url}/v1/sync/pairs", json=payload, headers=on.headers)
    assert response.status_code == 201, response.text
    pair = dict(response.json())
    assert PAIR_ID.match(pair["pair_id"]), pair
    return pair


async def pair_status(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{node.url}/v1/sync/pairs/{pair_id}", headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_state(
    http: httpx.AsyncClient, node: Node, pair_id: str, state: str, within: float, *, code: str | None = None
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = await pair_status(http, node, pair_id)
        if status["state"] != state:
            return None
        if code is not None and (status["last_error"] or {}).get("code") != code:
            return None
        return status

    return dict(await wait_until(reached, within, f"pair {pair_id} {state} {code or ''}"))


async def wait_count(http: httpx.AsyncClient, node: Node, thread: str, count: int, within: float) -> None:
    async def reached() -> bool:
        return await thread_count(http, node.url, thread, node.headers) == count

    await wait_until(reached, within, f"{count} records of {thread} on {node.url}")


async def ids_on(http: httpx.AsyncClient, node: Node, thread: str) -> list[str]:
    return [record["id"] for record in await all_records(http, node.url, thread, node.headers)]


async def assert_converged(http: httpx.AsyncClient, thread: str, expected: list[str], *nodes: Node) -> None:
    """Each node holds exactly the expected ids, each once."""
    for node in nodes:
        ids = await ids_on(http, node, thread)
        assert len(ids) == len(set(ids)), f"duplicates on {node.url}"
        assert set(ids) == set(expected) and len(ids) == len(expected), (
            f"{node.url}: {len(ids)} ids, {len(set(ids) - set(expected))} unexpected, "
            f"{len(set(expected) - set(ids))} missing"
        )


async def totals(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{node.url}/v1/sync/pairs/{pair_id}/stats", headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["totals"])


# -- the seed 002 walk-through -----------------------------------------------------------------------


async def test_seed_002_walkthrough_then_bidirectional(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_federation_demo"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    assert a.did.startswith("did:key:z6Mk") and b.did.startswith("did:key:z6Mk") and a.did != b.did
    async with client() as http:
        with trio.fail_after(60):
            # 3. A pair on B pulls A → B.
            pair_b = await create_pair(http, b, a, thread)
            assert pair_b["peer_did"] == a.did and pair_b["thread_id"] == thread and "warning" not in pair_b
            assert pair_b["state"] in ("starting", "running") and pair_b["direction"] == "pull"

            # 4. Emit on A, observe on B: same id, A's signature kept and valid.
            on_a = await emit(
                http,
                a,
                {
                    "act": "INTEND",
                    "actor": "did:test:alice",
                    "thread": thread,
                    "clock": 1,
                    "body": {"goal": "hello from A", "kind": "core.intent", "_v": 1},
                },
            )
            assert on_a["signer"] == a.did

            async def on_b() -> dict[str, Any] | None:
                response = await http.get(f"{b.url}/v1/records/{on_a['id']}")
                return dict(response.json()) if response.status_code == 200 else None

            copy = await wait_until(on_b, 15, "A's record on B")
            assert copy["id"] == on_a["id"] and copy["body"] == on_a["body"]
            assert (copy["signer"], copy["sig"]) == (a.did, on_a["sig"])
            assert verify_record_signature(copy["id"], copy["signer"], copy["sig"])
            status = await wait_state(http, b, pair_b["pair_id"], "running", 10)
            assert status["records_pulled"] == 1 and status["last_error"] is None

            # 5. Bidirectional: a pair on A pulls B.
            pair_a = await create_pair(http, a, b, thread)
            on_b_record = await emit(http, b, envelope(thread, 1, actor="did:test:bob", act="DO", summary="from B"))

            async def on_a_side() -> dict[str, Any] | None:
                response = await http.get(f"{a.url}/v1/records/{on_b_record['id']}")
                return dict(response.json()) if response.status_code == 200 else None

            back = await wait_until(on_a_side, 15, "B's record on A")
            assert (back["signer"], back["sig"]) == (b.did, on_b_record["sig"])
            assert verify_record_signature(back["id"], back["signer"], back["sig"])

            # No loops, no duplicates: both pairs keep polling, both sides hold each id once.
            before = {
                node.url: (await totals(http, node, pid))["pulls"]
                for node, pid in ((a, pair_a["pair_id"]), (b, pair_b["pair_id"]))
            }
            for node, pid in ((a, pair_a["pair_id"]), (b, pair_b["pair_id"])):

                async def polled_more(node: Node = node, pid: str = pid) -> bool:
                    return bool((await totals(http, node, pid))["pulls"] >= before[node.url] + 5)

                await wait_until(polled_more, 10, f"five more polls on {node.url}")
            await assert_converged(http, thread, [on_a["id"], on_b_record["id"]], a, b)
            # Each side saw its own record come back exactly as a duplicate, never stored twice.
            for node, pid in ((a, pair_a["pair_id"]), (b, pair_b["pair_id"])):
                status = await pair_status(http, node, pid)
                assert status["state"] == "running" and status["records_pulled"] == 1
                assert status["records_duplicate"] >= 1 and status["records_refused"] == {}

            health = (await http.get(f"{b.url}/v1/sync/health")).json()
            assert health["object"] == "sync_health" and health["pairs_total"] == 1
            assert health["pairs_by_state"]["running"] == 1 and health["records_pulled_last_hour"] == 1
            assert (await http.get(f"{b.url}/health")).json()["federation"]["pairs_total"] == 1


async def test_three_instances_relay_a_record_with_its_original_signature(
    daemon_factory: type[DaemonProcess],
) -> None:
    thread = "th_relay"
    a, b, c = [await start_node(daemon_factory, name) for name in ("a", "b", "c")]
    async with client() as http:
        with trio.fail_after(60):
            await create_pair(http, b, a, thread)
            await create_pair(http, c, b, thread)
            origin = await emit(http, a, envelope(thread, 7, actor="did:test:alice"))
            await wait_count(http, c, thread, 1, 15)
            (copy,) = await all_records(http, c.url, thread)
            assert copy["id"] == origin["id"] and (copy["signer"], copy["sig"]) == (a.did, origin["sig"])
            assert verify_record_signature(copy["id"], copy["signer"], copy["sig"])


# -- volume ------------------------------------------------------------------------------------------


# Enough records for several pull pages (PAGE_LIMIT is 1000) written by 16 concurrent clients while the pair
# pulls: the catch-up spans pages that grow under it. 10,000 records took 33 s and checked nothing 3,000 do not;
# catching up across a crash is the kill -9 tests' job (their backlog is ten pages).
VOLUME = 3_000


async def test_thousands_of_records_written_while_syncing_converge(daemon_factory: type[DaemonProcess]) -> None:
    assert VOLUME > 2 * PAGE_LIMIT
    thread = "th_volume"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(150):
            pair = await create_pair(http, b, a, thread)  # syncing while A is being written
            ids = await emit_bulk(http, a, thread, VOLUME, workers=16)
            assert len(set(ids)) == VOLUME
            await wait_count(http, b, thread, VOLUME, 60)
            await assert_converged(http, thread, ids, a, b)
            status = await pair_status(http, b, pair["pair_id"])
            assert status["records_pulled"] == VOLUME and status["records_duplicate"] == 0
            assert status["lag_records"] == 0 and status["records_refused"] == {}
            a_records = await all_records(http, a.url, thread)
            assert status["cursor"] == encode_cursor(max(r["sequence"] for r in a_records))


# -- crashes -----------------------------------------------------------------------------------------

# Ten pull pages: the kill lands once two have committed, with most of the backlog still to come. 20,000 records
# cost twice the signing and verifying and proved nothing more.
BACKLOG = 10 * PAGE_LIMIT


async def kill_mid_sync(http: httpx.AsyncClient, victim: Node, b: Node, thread: str) -> int:
    """Kill ``victim`` with SIGKILL once B holds some but not all of the backlog; returns B's count then."""

    async def partly() -> int:
        count = await thread_count(http, b.url, thread)
        return count if count >= 2 * PAGE_LIMIT else 0

    seen = int(await wait_until(partly, 30, "B part-way through the backlog", interval=0.01))
    await victim.kill()
    assert seen < BACKLOG - 2000, f"B already had {seen} of {BACKLOG}: the kill did not land mid-sync"
    return seen


def on_disk(node: Node, thread: str, pair_id: str) -> tuple[int, int]:
    """(records of ``thread``, the pair's cursor) in a stopped node's store file."""
    connection = connect_reader(node.process.home.db_path)
    try:
        (held,) = next(iter(connection.execute("SELECT COUNT(*) FROM records WHERE thread = ?", (thread,))))
        rows = list(connection.execute("SELECT cursor FROM pair_cursors WHERE pair_id = ?", (pair_id,)))
        return int(held), decode_cursor(rows[0][0]) if rows else 0
    finally:
        connection.close()


async def first_sequence(http: httpx.AsyncClient, node: Node, thread: str) -> int:
    """The sequence of ``thread``'s first record on ``node`` (a fresh home holds its genesis records first)."""
    response = await http.get(f"{node.url}/v1/records", params={"thread": thread, "limit": 1}, headers=node.headers)
    assert response.status_code == 200, response.text[:500]
    return int(response.json()["data"][0]["sequence"])


async def test_kill_9_of_the_pulling_instance_mid_sync(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_backlog_b"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(120):
            ids = await push_backlog(http, a, thread, BACKLOG)
            first = await first_sequence(http, a, thread)
            pair = await create_pair(http, b, a, thread)
            await kill_mid_sync(http, b, b, thread)
            # What B had durably at the kill: its records and its cursor agree (one transaction).
            held, cursor = await trio.to_thread.run_sync(on_disk, b, thread, pair["pair_id"])
            assert 0 < held < BACKLOG and cursor == first + held - 1  # A's backlog is one run of sequences
            await b.start()
            listed = (await http.get(f"{b.url}/v1/sync/pairs")).json()["data"]
            assert [p["pair_id"] for p in listed] == [pair["pair_id"]]
            await wait_count(http, b, thread, BACKLOG, 60)
            await assert_converged(http, thread, ids, a, b)
            status = await pair_status(http, b, pair["pair_id"])
            # The restart goes on from the cursor: nothing it already had is pulled again.
            assert status["records_duplicate"] == 0, status
            assert status["records_pulled"] == BACKLOG - held


async def test_kill_9_of_the_source_mid_sync(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_backlog_a"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(120):
            ids = await push_backlog(http, a, thread, BACKLOG)
            pair = await create_pair(http, b, a, thread)
            await kill_mid_sync(http, a, b, thread)
            await wait_state(http, b, pair["pair_id"], "failing", 20, code="CONNECT_REFUSED")
            await a.start()  # same home, same port
            kicked = await http.post(
                f"{b.url}/v1/sync/pairs/{pair['pair_id']}/kick", json={}
            )  # skip the rest of the backoff
            assert kicked.status_code == 200, kicked.text
            await wait_count(http, b, thread, BACKLOG, 60)
            await assert_converged(http, thread, ids, a, b)
            status = await wait_state(http, b, pair["pair_id"], "running", 10)
            # A page that never arrived was never committed, so nothing is pulled twice.
            assert status["records_duplicate"] == 0, status


# -- outages -----------------------------------------------------------------------------------------


async def test_source_down_then_back(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_outage"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(90):
            pair_id = (await create_pair(http, b, a, thread))["pair_id"]
            ids = [(await emit(http, a, envelope(thread, n)))["id"] for n in range(1, 6)]
            await wait_count(http, b, thread, 5, 15)

            # Down: B's pair fails with CONNECT_REFUSED and backs off.
            await a.stop()
            failing = await wait_state(http, b, pair_id, "failing", 15, code="CONNECT_REFUSED")
            assert "not reachable" in failing["last_error"]["message"]
            assert failing["next_retry_at"] is not None and failing["retries"] >= 1

            async def backed_off() -> dict[str, Any] | None:
                status = await pair_status(http, b, pair_id)
                return status if status["consecutive_failures"] >= 2 else None

            status = await wait_until(backed_off, 15, "a second failed attempt")
            assert status["state"] == "failing" and status["history"][-1]["to"] == "failing"

            # Back on the same port: running again within one backoff step, without a kick.
            await a.start()
            status = await pair_status(http, b, pair_id)
            # next_retry_at is RFC 3339 to the second: the retry is due up to a second after the time shown.
            due = status["next_retry_at"]
            step_ends = datetime.fromisoformat(due).timestamp() + 1.0 if status["state"] == "failing" else time.time()
            recovered = await wait_state(http, b, pair_id, "running", max(step_ends - time.time(), 0) + 3.0)
            assert recovered["consecutive_failures"] == 0 and recovered["next_retry_at"] is None
            assert [entry["to"] for entry in recovered["history"]][-1] == "running"
            ids.append((await emit(http, a, envelope(thread, 6)))["id"])
            await wait_count(http, b, thread, 6, 15)
            await assert_converged(http, thread, ids, a, b)

            # Down again, long enough for a longer backoff: a kick brings it back at once.
            await a.stop()

            async def long_backoff() -> dict[str, Any] | None:
                status = await pair_status(http, b, pair_id)
                return status if status["consecutive_failures"] >= 3 else None

            await wait_until(long_backoff, 20, "three failed attempts")
            await a.start()
            response = await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/kick", json={}, params={"wait": "1"})
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "running"


# -- forgeries ---------------------------------------------------------------------------------------


async def test_forged_records_are_refused_and_the_pair_keeps_running(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_forged"
    forger, victim = Identity.generate(), Identity.generate()
    b = await start_node(daemon_factory, "b")
    good = [signed(forger, thread, n, actor="did:test:forger") for n in (1, 2, 3, 4)]
    # Claims to come from another instance, but the signature is the forger's.
    bad_signature = {**signed(forger, thread, 10, actor="did:test:victim"), "signer": victim.did}
    # A valid signature over an id that is not this content's.
    honest = signed(forger, thread, 11, actor="did:test:forger")
    wrong_id = {**honest, "body": {"n": "rewritten"}}
    # Signed over its own id, but by someone else than the signer it names.
    stolen = {**signed(forger, thread, 12, actor="did:test:forger")}
    stolen["sig"] = victim.sign_record_id(stolen["id"])
    peer = FakePeer(identity=forger, cursor_for=encode_cursor)
    peer.serve(good[0], bad_signature, wrong_id, good[1], good[2])
    with peer.running():
        async with client() as http:
            with trio.fail_after(60):
                pair = await create_pair(http, b, peer.url, thread, peer_did=forger.did)
                pair_id = pair["pair_id"]

                async def refused_both() -> dict[str, Any] | None:
                    status = await pair_status(http, b, pair_id)
                    return status if status["records_refused"] == {"SIGNATURE_INVALID": 1, "ID_MISMATCH": 1} else None

                status = await wait_until(refused_both, 15, "both forgeries refused")
                assert status["state"] == "running" and status["records_pulled"] == 3
                assert status["cursor"] == encode_cursor(5)
                await assert_converged(http, thread, [r["id"] for r in good[:3]], b)
                for forged_id in (bad_signature["id"], wrong_id["id"], honest["id"]):
                    response = await http.get(f"{b.url}/v1/records/{forged_id}")
                    assert response.status_code == 404, forged_id
                for record in await all_records(http, b.url, thread):
                    assert (record["signer"], record["sig"]) == (
                        forger.did,
                        next(g["sig"] for g in good if g["id"] == record["id"]),
                    )

                # More of the same later: still refused, still running, the good one lands.
                peer.serve(stolen, good[3])

                async def refused_three() -> dict[str, Any] | None:
                    status = await pair_status(http, b, pair_id)
                    return status if status["records_refused"].get("SIGNATURE_INVALID") == 2 else None

                status = await wait_until(refused_three, 15, "the stolen signature refused")
                await wait_count(http, b, thread, 4, 10)
                assert status["state"] == "running" and status["last_error"] is None
                assert (await http.get(f"{b.url}/v1/records/{stolen['id']}")).status_code == 404
                assert all(decode_cursor(r.param("since") or "") <= 7 for r in peer.feed_requests())


# -- auth --------------------------------------------------------------------------------------------


async def test_a_peer_that_requires_auth_needs_a_federation_token(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_auth"
    a = await start_node(daemon_factory, "a", insecure=False)
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(60):
            # A really does refuse anonymous loopback sync calls.
            anonymous = await http.get(f"{a.url}/v1/sync/changes", params={"thread": thread})
            assert anonymous.status_code == 401, anonymous.text
            record = await emit(http, a, envelope(thread, 1))

            # No token: failing with HTTP_4XX, and the message says why.
            pair = await create_pair(http, b, a, thread)
            assert pair["has_token"] is False
            failing = await wait_state(http, b, pair["pair_id"], "failing", 15, code="HTTP_4XX")
            message = failing["last_error"]["message"]
            assert "401" in message and "token" in message.lower(), message

            # A token without the federation scope: refused as well, naming the scope problem.
            response = await http.post(
                f"{a.url}/v1/tokens", json={"scopes": ["records:write"], "label": "wrong"}, headers=a.headers
            )
            assert response.status_code == 201, response.text
            await http.delete(f"{b.url}/v1/sync/pairs/{pair['pair_id']}", headers=JSON)
            pair = await create_pair(http, b, a, thread, token=response.json()["token"])
            failing = await wait_state(http, b, pair["pair_id"], "failing", 15, code="HTTP_4XX")
            assert "403" in failing["last_error"]["message"], failing["last_error"]

            # A token minted on A for federation:sync: running and syncing.
            response = await http.post(
                f"{a.url}/v1/tokens", json={"scopes": ["federation:sync"], "label": "pair b"}, headers=a.headers
            )
            assert response.status_code == 201, response.text
            token = response.json()["token"]
            await http.delete(f"{b.url}/v1/sync/pairs/{pair['pair_id']}", headers=JSON)
            pair = await create_pair(http, b, a, thread, token=token)
            assert pair["has_token"] is True and token not in json.dumps(pair)
            await wait_state(http, b, pair["pair_id"], "running", 15)
            await wait_count(http, b, thread, 1, 10)
            later = await emit(http, a, envelope(thread, 2))
            await wait_count(http, b, thread, 2, 10)
            await assert_converged(http, thread, [record["id"], later["id"]], b)
            listing = (await http.get(f"{b.url}/v1/sync/pairs")).text
            assert token not in listing


# -- persistence -------------------------------------------------------------------------------------


async def test_pairs_persist_across_a_restart_and_continue_from_their_cursor(
    daemon_factory: type[DaemonProcess],
) -> None:
    thread = "th_persist"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(90):
            ids = await emit_bulk(http, a, thread, 300, workers=8)
            pair = await create_pair(http, b, a, thread, mode="polling")
            await wait_count(http, b, thread, 300, 20)
            before = await wait_state(http, b, pair["pair_id"], "running", 10)
            await b.stop()
            await b.start()

            listed = (await http.get(f"{b.url}/v1/sync/pairs")).json()["data"]
            assert len(listed) == 1
            (after,) = listed
            for key in ("pair_id", "peer_did", "peer_url", "thread_id", "mode", "poll_interval", "cursor"):
                assert after[key] == before[key], key
            ids += await emit_bulk(http, a, thread, 10, workers=2, tag="late")
            await wait_count(http, b, thread, 310, 20)
            await assert_converged(http, thread, ids, a, b)
            status = await pair_status(http, b, pair["pair_id"])
            assert status["records_pulled"] == 10 and status["records_duplicate"] == 0  # no re-pull

            # A paused pair stays paused across a restart, and resumes from its cursor.
            response = await http.post(f"{b.url}/v1/sync/pairs/{pair['pair_id']}/pause", json={})
            assert response.status_code == 200 and response.json()["state"] == "paused"
            paused_at = response.json()["cursor"]
            await b.kill()
            await b.start()
            status = await pair_status(http, b, pair["pair_id"])
            assert status["state"] == "paused" and status["cursor"] == paused_at
            ids += await emit_bulk(http, a, thread, 5, workers=1, tag="paused")
            polls = (await totals(http, b, pair["pair_id"]))["pulls"]
            # While paused nothing arrives: kick is refused to pull, B stays at 310.
            await http.post(f"{b.url}/v1/sync/pairs/{pair['pair_id']}/kick", json={}, params={"wait": "1"})
            assert await thread_count(http, b.url, thread) == 310
            assert (await totals(http, b, pair["pair_id"]))["pulls"] == polls
            response = await http.post(f"{b.url}/v1/sync/pairs/{pair['pair_id']}/resume", json={})
            assert response.status_code == 200
            await wait_count(http, b, thread, 315, 20)
            status = await pair_status(http, b, pair["pair_id"])
            assert status["records_pulled"] == 5 and status["records_duplicate"] == 0


# -- continuous mode ---------------------------------------------------------------------------------


async def test_continuous_mode_streams_survives_a_source_restart_and_converges(
    daemon_factory: type[DaemonProcess],
) -> None:
    thread = "th_continuous_e2e"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(90):
            ids = [(await emit(http, a, envelope(thread, n)))["id"] for n in (1, 2)]
            # A long poll interval: whatever arrives quickly came over the stream.
            pair = await create_pair(http, b, a, thread, mode="continuous", poll_interval=3600)
            assert pair["mode"] == "continuous"
            await wait_count(http, b, thread, 2, 15)
            await wait_state(http, b, pair["pair_id"], "running", 10)
            for n in range(3, 8):
                ids.append((await emit(http, a, envelope(thread, n)))["id"])
                await wait_count(http, b, thread, n, 5)

            await a.stop()
            await wait_state(http, b, pair["pair_id"], "failing", 15, code="CONNECT_REFUSED")
            await a.start()
            await wait_state(http, b, pair["pair_id"], "running", 20)
            for n in range(8, 13):
                ids.append((await emit(http, a, envelope(thread, n)))["id"])
            await wait_count(http, b, thread, 12, 15)
            await assert_converged(http, thread, ids, a, b)
            status = await pair_status(http, b, pair["pair_id"])
            assert status["records_pulled"] == 12 and status["records_refused"] == {}


# -- pair management over HTTP -----------------------------------------------------------------------


async def test_pair_routes_pause_resume_kick_remove(daemon_factory: type[DaemonProcess]) -> None:
    thread = "th_routes"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(60):
            pair = await create_pair(http, b, a, thread, mode="on-demand")
            pair_id = pair["pair_id"]
            # One pair per (peer, thread).
            duplicate = await http.post(
                f"{b.url}/v1/sync/pairs", json={"peer_did": a.did, "peer_url": a.url + "/", "thread_id": thread}
            )
            assert duplicate.status_code == 409 and duplicate.json()["code"] == "PAIR_EXISTS"
            bad = await http.post(f"{b.url}/v1/sync/pairs", json={"peer_did": a.did, "thread_id": thread})
            assert bad.status_code == 400 and "peer_url" in bad.json()["message"]

            await emit_bulk(http, a, thread, 3, workers=1)
            # On-demand: nothing until kicked; kick?wait=1 answers after the pull.
            assert (await pair_status(http, b, pair_id))["records_pulled"] == 0
            kicked = await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/kick", json={}, params={"wait": "1"})
            assert kicked.status_code == 200, kicked.text
            assert kicked.json()["pulled_now"] == 3 and kicked.json()["state"] == "running"
            assert await thread_count(http, b.url, thread) == 3

            paused = await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/pause", json={})
            assert paused.json()["state"] == "paused" and paused.json()["state_reason"] == "paused by operator"
            await emit_bulk(http, a, thread, 2, workers=1, tag="more")
            kicked = await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/kick", json={}, params={"wait": "1"})
            assert kicked.json()["pulled_now"] == 0 and kicked.json()["state"] == "paused"
            await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/resume", json={})
            await wait_count(http, b, thread, 5, 10)

            stats = (await http.get(f"{b.url}/v1/sync/pairs/{pair_id}/stats")).json()
            assert stats["object"] == "sync_pair_stats" and stats["totals"]["records_pulled"] == 5
            assert stats["poll"]["mode"] == "on-demand" and stats["records_last_hour"] == 5

            removed = await http.delete(f"{b.url}/v1/sync/pairs/{pair_id}", headers=JSON)
            assert removed.status_code == 200 and removed.json()["state"] == "stopped"
            # Gone at once: from the pair routes, the list, and the supervision tree of /v1/status.
            assert (await http.get(f"{b.url}/v1/sync/pairs/{pair_id}")).status_code == 404
            assert (await http.get(f"{b.url}/v1/sync/pairs")).json()["data"] == []
            status = (await http.get(f"{b.url}/v1/status")).json()
            assert status["federation"]["pairs"] == [] and pair_id not in json.dumps(status["supervision"])
            gone = await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/kick", json={})
            assert gone.status_code == 404
            assert (await http.get(f"{b.url}/v1/sync/pairs/pair_0000000000000000")).status_code == 404
            again = await create_pair(http, b, a, thread)  # the slot is free again, under a new id
            assert again["pair_id"] != pair_id

            # A non-loopback peer while bound to loopback: the pair says so.
            remote = await http.post(
                f"{b.url}/v1/sync/pairs",
                json={
                    "peer_did": Identity.generate().did,
                    "peer_url": "http://192.0.2.10:9200",
                    "thread_id": thread,
                    "mode": "on-demand",
                },
            )
            assert remote.status_code == 201 and "0.0.0.0" in remote.json()["warning"]


@pytest.mark.parametrize("scope", ["records:read", "records:write"])
async def test_sync_routes_honour_token_scopes(daemon_factory: type[DaemonProcess], scope: str) -> None:
    a = await start_node(daemon_factory, "a", insecure=False)
    async with client() as http:
        minted = await http.post(f"{a.url}/v1/tokens", json={"scopes": [scope], "label": "s"}, headers=a.headers)
        token = {"authorization": f"Bearer {minted.json()['token']}"}
        feed = await http.get(f"{a.url}/v1/sync/changes", params={"thread": "th_s"}, headers=token)
        assert feed.status_code == (200 if scope == "records:read" else 403), feed.text
        manage = await http.post(
            f"{a.url}/v1/sync/pairs",
            json={"peer_did": a.did, "peer_url": "http://127.0.0.1:9", "thread_id": "th_s"},
            headers=token,
        )
        assert manage.status_code == 403, manage.text


async def test_removing_a_pair_answers_promptly(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(30):
            pair = await create_pair(http, b, a, "th_remove")
            await wait_state(http, b, pair["pair_id"], "running", 10)
            started = time.monotonic()
            removed = await http.delete(f"{b.url}/v1/sync/pairs/{pair['pair_id']}", headers=JSON)
            elapsed = time.monotonic() - started
            assert removed.status_code == 200 and removed.json()["state"] == "stopped"
            assert elapsed < 1.0, f"DELETE took {elapsed:.2f}s"


async def test_operator_points_change_refuse_self_and_duplicates_and_pause_shows_in_the_tree(
    daemon_factory: type[DaemonProcess],
) -> None:
    """Issue 8 / operations review #10: settings change after add (and survive a restart); a pair with
    ourselves and a second pair for the same peer and thread under another spelling are refused; a paused
    pair is ``paused`` in the supervision tree."""
    thread = "th_operator"
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        with trio.fail_after(90):
            pair = await create_pair(http, b, a, thread, mode="on-demand")
            pair_id = pair["pair_id"]
            port = a.url.rsplit(":", 1)[1]
            for spelling in (f"http://localhost:{port}", f"http://127.0.0.1:{port}/", f"HTTP://LOCALHOST:{port}"):
                twin = await http.post(
                    f"{b.url}/v1/sync/pairs",
                    json={"peer_did": Identity.generate().did, "peer_url": spelling, "thread_id": thread},
                )
                assert twin.status_code == 409 and twin.json()["code"] == "PAIR_EXISTS", (spelling, twin.text)
            # A pair whose URL is this very daemon, whatever DID it names: its manifest proves who answers.
            own = await http.post(
                f"{b.url}/v1/sync/pairs",
                json={"peer_did": Identity.generate().did, "peer_url": b.url, "thread_id": "th_self"},
            )
            assert own.status_code == 400 and own.json()["code"] == "SELF_PAIR", own.text
            assert "this daemon" in own.json()["message"]

            changed = await http.patch(
                f"{b.url}/v1/sync/pairs/{pair_id}", json={"mode": "polling", "poll_interval": 0.2}
            )
            assert changed.status_code == 200, changed.text
            assert changed.json()["mode"] == "polling" and changed.json()["poll_interval"] == 0.2
            await emit_bulk(http, a, thread, 2, workers=1)
            await wait_count(http, b, thread, 2, 10)  # polling now: no kick needed
            bad = await http.patch(f"{b.url}/v1/sync/pairs/{pair_id}", json={"thread_id": "th_other"})
            assert bad.status_code == 400 and "remove it and add a new one" in bad.json()["message"]
            bad = await http.patch(f"{b.url}/v1/sync/pairs/{pair_id}", json={"mode": "push"})
            assert bad.status_code == 400 and bad.json()["code"] == "INVALID_MODE"

            await http.post(f"{b.url}/v1/sync/pairs/{pair_id}/pause", json={})
            tree = json.dumps((await http.get(f"{b.url}/v1/status")).json()["supervision"])
            assert re.search(rf'"id": "{pair_id}", "state": "paused"', tree), tree

            await b.stop()
            await b.start()
            after = await pair_status(http, b, pair_id)
            assert (after["mode"], after["poll_interval"], after["state"]) == ("polling", 0.2, "paused")
