"""Trust between stewards: what a client, a peer or a planted record can no longer do (issue 7).

Each test here reproduces an attack that worked on 6db2167 and shows it failing now:

* a LEARN ``core.sync_pair.v1`` record planted on ``th_federation_pairs`` (by a client with
  ``records:write``, a peer with ``federation:sync`` pushing, or a peer being pulled) became
  a pair at the next start; with ``pair_id: "../admin"`` the daemon sent
  ``secrets/admin.token`` to the attacker's URL;
* a pulled page could carry validly signed records for any other thread, reserved ones
  included (a peer could register namespaces on the receiver);
* a continuous peer's SSE ``id:`` above 2^63-1 overflowed the cursor save and took the
  daemon down for good; a cursor not in spl's own format was a ``PARSE_ERROR``;
* a pair never checked who it was talking to.

Real daemons on loopback (``DaemonProcess``) and a scripted peer (``FakePeer``); every wait
polls a condition against a deadline.
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest
import trio
from fake_peer import FakePeer
from fed_support import sign_envelope, signed, wait_until

from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.reserved import RESERVED_THREADS
from spl.core.stored import Candidate
from spl.daemon.launcher import DaemonProcess
from spl.store.database import connect_writer
from spl.store.ingest import commit_batch, load_writer_state

POLL = 0.2


def planted_pair(peer_url: str, *, pair_id: str = "../admin", clock: int = 1) -> dict[str, Any]:
    """The record that used to hand out the admin token: a pair aimed at the attacker."""
    return {
        "act": "LEARN",
        "actor": "did:test:mallory",
        "thread": "th_federation_pairs",
        "clock": clock,
        "body": {
            "kind": "core.sync_pair.v1",
            "_v": 1,
            "pair_id": pair_id,
            "peer_did": "did:key:z6MkattackerXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "peer_url": peer_url,
            "thread_id": "th_loot",
            "mode": "polling",
            "poll_interval": 0.05,
            "paused": False,
            "status": "active",
        },
    }


def planted_namespace(name: str, clock: int = 1) -> dict[str, Any]:
    return {
        "act": "LEARN",
        "actor": "did:test:mallory",
        "thread": "th_namespace_registry",
        "clock": clock,
        "body": {"kind": "core.namespace.v1", "namespace_id": name, "status": "active"},
    }


async def start(factory: type[DaemonProcess], name: str, *, insecure: bool = False) -> DaemonProcess:
    process = factory(name, insecure=insecure)
    await trio.to_thread.run_sync(functools.partial(process.start, port=0))
    return process


def admin(process: DaemonProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {process.admin_token}"}


async def mint(http: httpx.AsyncClient, process: DaemonProcess, *scopes: str) -> dict[str, str]:
    response = await http.post(
        f"{process.url}/v1/tokens", json={"scopes": list(scopes), "label": "t"}, headers=admin(process)
    )
    assert response.status_code == 201, response.text
    return {"authorization": f"Bearer {response.json()['token']}"}


async def did_of(http: httpx.AsyncClient, process: DaemonProcess) -> str:
    return str((await http.get(f"{process.url}/v1/identity")).json()["did"])


async def pairs_on(http: httpx.AsyncClient, process: DaemonProcess) -> list[dict[str, Any]]:
    response = await http.get(f"{process.url}/v1/sync/pairs", headers=admin(process))
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def pair_status(http: httpx.AsyncClient, process: DaemonProcess, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{process.url}/v1/sync/pairs/{pair_id}", headers=admin(process))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def create_pair(
    http: httpx.AsyncClient, on: DaemonProcess, peer_url: str, peer_did: str, thread: str, **extra: Any
) -> dict[str, Any]:
    payload = {"peer_did": peer_did, "peer_url": peer_url, "thread_id": thread, "poll_interval": POLL, **extra}
    response = await http.post(f"{on.url}/v1/sync/pairs", json=payload, headers=admin(on))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def restart(process: DaemonProcess) -> None:
    await trio.to_thread.run_sync(process.stop)
    await trio.to_thread.run_sync(process.start)


async def record_exists(http: httpx.AsyncClient, process: DaemonProcess, record_id: str) -> bool:
    response = await http.get(f"{process.url}/v1/records/{record_id}", headers=admin(process))
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


async def test_no_client_or_pushing_peer_can_write_a_reserved_thread(daemon_factory: type[DaemonProcess]) -> None:
    a = await start(daemon_factory, "a")
    with FakePeer().running() as attacker:
        async with httpx.AsyncClient(timeout=20) as http:
            writer = await mint(http, a, "records:write")
            for number, thread in enumerate(sorted(RESERVED_THREADS), start=1):
                record = {**planted_pair(attacker.url, clock=number), "thread": thread}
                response = await http.post(f"{a.url}/v1/records", json=record, headers=writer)
                assert response.status_code == 403, (thread, response.text)
                assert response.json()["code"] == "RESERVED_THREAD" and thread in response.json()["message"]

            # A peer's federation token pushing validly signed records: refused one by one.
            peer = await mint(http, a, "federation:sync")
            mallory = Identity.generate()
            pushed = [
                sign_envelope(mallory, planted_pair(attacker.url)),
                sign_envelope(mallory, planted_namespace("evil")),
            ]
            allowed = signed(mallory, "th_ok", 1)
            response = await http.post(f"{a.url}/v1/sync/records", json={"records": [*pushed, allowed]}, headers=peer)
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["accepted"] == [allowed["id"]]
            assert sorted(r["code"] for r in result["refused"]) == ["RESERVED_THREAD", "RESERVED_THREAD"]
            for record in pushed:
                assert not await record_exists(http, a, record["id"])

            # No change feed serves configuration, whoever asks.
            for thread in ("th_federation_pairs", "th_namespace_registry", "th_consent"):
                for feed in ("normal", "longpoll", "continuous"):
                    response = await http.get(
                        f"{a.url}/v1/sync/changes", params={"thread": thread, "feed": feed}, headers=admin(a)
                    )
                    assert response.status_code == 403 and response.json()["code"] == "RESERVED_THREAD", feed

            namespaces = (await http.get(f"{a.url}/v1/namespaces", headers=admin(a))).json()["data"]
            assert "evil" not in {entry["id"] for entry in namespaces}
            await restart(a)
            assert await pairs_on(http, a) == []
        assert attacker.requests == []  # nothing, and above all no token, ever went to the attacker


def plant_in_store(process: DaemonProcess, records: list[dict[str, Any]], signer: Identity) -> None:
    """Write records straight into a stopped daemon's store, as a bug or an old version might have."""
    connection = connect_writer(process.home.db_path)
    try:
        state = load_writer_state(connection, process.home.load_identity().did)
        candidates = [Candidate(validate_envelope(r), signer.did, signer.sign_record_id(r["id"])) for r in records]
        commit_batch(connection, [candidates], state)
    finally:
        connection.close()


async def test_a_pair_record_not_signed_by_this_instance_is_never_loaded(
    daemon_factory: type[DaemonProcess],
) -> None:
    b = await start(daemon_factory, "b")
    mallory = Identity.generate()
    with FakePeer().running() as attacker, FakePeer().running() as honest:
        honest.serve(signed(honest.identity, "th_real", 1))
        records = [
            sign_envelope(mallory, planted_pair(attacker.url, pair_id="../admin", clock=1)),
            sign_envelope(mallory, planted_pair(attacker.url, pair_id="pair_00000000000000aa", clock=2)),
            sign_envelope(mallory, planted_namespace("evil")),
        ]
        await trio.to_thread.run_sync(b.stop)
        await trio.to_thread.run_sync(plant_in_store, b, records, mallory)
        await trio.to_thread.run_sync(b.start)
        async with httpx.AsyncClient(timeout=20) as http:
            pair = await create_pair(http, b, honest.url, honest.identity.did, "th_real")

            async def polled_twice() -> bool:
                return len(honest.feed_requests()) >= 2

            await wait_until(polled_twice, 15, "the honest pair to poll twice")  # the federation actor is up
            assert [p["pair_id"] for p in await pairs_on(http, b)] == [pair["pair_id"]]
            namespaces = (await http.get(f"{b.url}/v1/namespaces", headers=admin(b))).json()["data"]
            assert "evil" not in {entry["id"] for entry in namespaces}
            response = await http.post(
                f"{b.url}/v1/records",
                json={**signed(mallory, "th_x", 1), "body": {"namespace": "evil"}},
                headers=admin(b),
            )
            assert response.status_code == 403 and response.json()["code"] == "NAMESPACE_REJECTED", response.text
            response = await http.delete(
                f"{b.url}/v1/sync/pairs/..%2Fadmin", headers={**admin(b), "content-type": "application/json"}
            )
            assert response.status_code == 404, response.text
        assert attacker.requests == []


async def test_a_pulled_page_may_only_hold_the_pairs_thread(daemon_factory: type[DaemonProcess]) -> None:
    b = await start(daemon_factory, "b")
    with FakePeer().running() as attacker, FakePeer().running() as peer:
        good = signed(peer.identity, "th_pulled", 1)
        other = signed(peer.identity, "th_elsewhere", 1)
        pair_record = sign_envelope(peer.identity, planted_pair(attacker.url))
        namespace_record = sign_envelope(peer.identity, planted_namespace("evil"))
        later = signed(peer.identity, "th_pulled", 2)
        peer.serve(good, other, pair_record, namespace_record, later)
        async with httpx.AsyncClient(timeout=20) as http:
            pair = await create_pair(http, b, peer.url, peer.identity.did, "th_pulled")

            async def refused_all() -> dict[str, Any] | None:
                status = await pair_status(http, b, pair["pair_id"])
                return status if status["records_refused"] == {"THREAD_MISMATCH": 1, "RESERVED_THREAD": 2} else None

            status = await wait_until(refused_all, 15, "three records refused")
            assert status["state"] == "running" and status["records_pulled"] == 2
            assert status["cursor"] == "opaque~5"  # refused records do not hold the cursor back
            for record in (good, later):
                assert await record_exists(http, b, record["id"])
            for record in (other, pair_record, namespace_record):
                assert not await record_exists(http, b, record["id"])
            namespaces = (await http.get(f"{b.url}/v1/namespaces", headers=admin(b))).json()["data"]
            assert "evil" not in {entry["id"] for entry in namespaces}
            await restart(b)
            assert [p["pair_id"] for p in await pairs_on(http, b)] == [pair["pair_id"]]
            await wait_until(lambda: len(peer.feed_requests()) >= 4, 15, "the pair polling after the restart")
        assert attacker.requests == []


async def test_foreign_cursors_and_an_sse_id_beyond_int64_are_stored_and_sent_back_verbatim(
    daemon_factory: type[DaemonProcess],
) -> None:
    huge = "99999999999999999999999"  # > 2^63 - 1: used to overflow the cursor save and stop the daemon
    b = await start(daemon_factory, "b")

    def cursor_for(n: int) -> str:
        return "" if n == 0 else huge if n == 3 else f"tok-{n}.x_Y"

    peer = FakePeer(cursor_for=cursor_for)
    with peer.running():
        peer.serve(signed(peer.identity, "th_stream", 1), signed(peer.identity, "th_stream", 2))
        async with httpx.AsyncClient(timeout=20) as http:
            pair = await create_pair(http, b, peer.url, peer.identity.did, "th_stream", mode="continuous")

            async def streaming() -> bool:
                return any(r.param("feed") == "continuous" for r in peer.feed_requests())

            await wait_until(streaming, 15, "the pair to open the continuous feed")
            peer.serve(signed(peer.identity, "th_stream", 3))

            async def at_huge() -> dict[str, Any] | None:
                status = await pair_status(http, b, pair["pair_id"])
                return status if status["cursor"] == huge and status["records_pulled"] == 3 else None

            await wait_until(at_huge, 15, "the huge SSE id as the pair's cursor")
            health = await http.get(f"{b.url}/health")
            assert health.status_code == 200, health.text

            # The stream breaks; the pair resumes from exactly what the peer gave it.
            peer.serve(signed(peer.identity, "th_stream", 4))
            peer.close_streams()

            async def resumed() -> dict[str, Any] | None:
                status = await pair_status(http, b, pair["pair_id"])
                return status if status["records_pulled"] == 4 else None

            await wait_until(resumed, 20, "the fourth record after the stream broke")
            sent = [r.param("since") or "" for r in peer.feed_requests()]
            assert huge in sent
            assert set(sent) <= {cursor_for(n) for n in range(6)}, sent
            await restart(b)
            status = await pair_status(http, b, pair["pair_id"])
            assert status["cursor"] in {cursor_for(n) for n in range(3, 6)}


async def test_a_pair_checks_the_peer_is_who_it_says(daemon_factory: type[DaemonProcess]) -> None:
    b = await start(daemon_factory, "b")
    someone_else = Identity.generate()
    honest = FakePeer()
    liar = FakePeer()
    tampered = FakePeer(tamper_manifest=True)
    with honest.running(), liar.running(), tampered.running():
        liar.manifest_did = someone_else.did  # claims someone else's DID, signed with its own key
        for peer in (honest, liar, tampered):
            peer.serve(signed(peer.identity, "th_who", 1))
        async with httpx.AsyncClient(timeout=20) as http:
            # The pair names a DID; the peer at that URL is, provably, somebody else.
            wrong = await create_pair(http, b, honest.url, someone_else.did, "th_who")
            # The peer claims the pair's DID but cannot sign as it; or its manifest was altered.
            forged = await create_pair(http, b, liar.url, someone_else.did, "th_who")
            altered = await create_pair(http, b, tampered.url, tampered.identity.did, "th_who")
            for pair, code in (
                (wrong, "PEER_DID_MISMATCH"),
                (forged, "MANIFEST_INVALID"),
                (altered, "MANIFEST_INVALID"),
            ):

                async def failing(pair: dict[str, Any] = pair, code: str = code) -> dict[str, Any] | None:
                    status = await pair_status(http, b, pair["pair_id"])
                    error = status["last_error"] or {}
                    return status if status["state"] == "failing" and error.get("code") == code else None

                status = await wait_until(failing, 15, f"{code} on {pair['pair_id']}")
                assert status["records_pulled"] == 0
        assert honest.feed_requests() == [] and liar.feed_requests() == [] and tampered.feed_requests() == []


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"token": "tök"}, 400, "INVALID_TOKEN"),
        ({"token": "a\nb"}, 400, "INVALID_TOKEN"),
        ({"peer_url": "http://[::1"}, 400, "INVALID_PEER_URL"),
        ({"peer_url": "http://127.0.0.1:99999"}, 400, "INVALID_PEER_URL"),
        ({"peer_url": "http://user:pw@127.0.0.1:1"}, 400, "INVALID_PEER_URL"),
        ({"thread_id": "th_consent"}, 403, "RESERVED_THREAD"),
        ({"peer_did": "did:key:z6Mk\x1b[31m"}, 400, "INVALID_PEER_DID"),
        ({"self": True}, 400, "SELF_PAIR"),
    ],
)
async def test_a_bad_pair_request_fails_alone_and_leaves_nothing(
    daemon_factory: type[DaemonProcess], change: dict[str, Any], status: int, code: str
) -> None:
    b = await start(daemon_factory, "b")
    async with httpx.AsyncClient(timeout=20) as http:
        payload: dict[str, Any] = {
            "peer_did": Identity.generate().did,
            "peer_url": "http://127.0.0.1:9",
            "thread_id": "th_p",
        }
        if change.pop("self", False):
            payload["peer_did"] = await did_of(http, b)
        payload.update(change)
        response = await http.post(f"{b.url}/v1/sync/pairs", json=payload, headers=admin(b))
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert await pairs_on(http, b) == []
        assert not (b.home.root / "secrets" / "pairs").exists() or not any(
            (b.home.root / "secrets" / "pairs").iterdir()
        )


async def test_loopback_is_not_an_identity(daemon_factory: type[DaemonProcess]) -> None:
    a = await start(daemon_factory, "a")  # auth on; the test client is on 127.0.0.1
    async with httpx.AsyncClient(timeout=20) as http:
        for method, path, body in (
            ("GET", "/v1/sync/changes?thread=th_t", None),
            ("GET", "/v1/sync/changes?thread=th_t&feed=continuous", None),
            ("GET", "/v1/sync/pairs", None),
            ("GET", "/v1/sync/health", None),
            ("POST", "/v1/sync/records", {"records": []}),
            ("POST", "/v1/sync/pairs", {"peer_did": "did:key:x", "peer_url": "http://10.0.0.1", "thread_id": "th"}),
        ):
            response = await http.request(method, f"{a.url}{path}", json=body)
            assert response.status_code == 401, (path, response.text)
            assert "10.0.0.1" not in response.text
        assert await pairs_on(http, a) == []


async def test_a_change_page_is_bounded_in_bytes_not_only_in_records(daemon_factory: type[DaemonProcess]) -> None:
    # Attacker review: limit=10000 over records of ~1 MB read ~10 GB into one request's memory.
    a = await start(daemon_factory, "a")
    origin = Identity.generate()
    big = [signed(origin, "th_big", n, blob="x" * 600_000) for n in range(1, 41)]  # ~24 MB in all
    async with httpx.AsyncClient(timeout=60) as http:
        for record in big:
            response = await http.post(f"{a.url}/v1/sync/records", json={"records": [record]}, headers=admin(a))
            assert response.status_code == 200 and response.json()["accepted"] == [record["id"]], response.text[:300]
        pages: list[dict[str, Any]] = []
        since = ""
        while True:
            response = await http.get(
                f"{a.url}/v1/sync/changes",
                params={"thread": "th_big", "limit": 10_000, "since": since},
                headers=admin(a),
            )
            assert response.status_code == 200
            page = response.json()
            pages.append(page)
            assert len(response.content) < 17 * 1024 * 1024
            since = page["next_cursor"]
            if not page["has_more"]:
                break
        assert len(pages) >= 2 and pages[0]["has_more"] and pages[0]["pending"] == 40 - len(pages[0]["records"])
        ids = [item["id"] for page in pages for item in page["records"]]
        assert ids == [record["id"] for record in big]  # every record once, in order, across the pages
