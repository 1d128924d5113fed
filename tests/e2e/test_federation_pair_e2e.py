"""Federation pairs between real daemons with auth on: the handshake, the lifecycle, consent, crashes.

Every daemon is a real ``spl serve`` process on loopback (``DaemonProcess``, port 0); the
fixtures kill them all in teardown. Every wait polls a condition against a deadline
(``wait_until``); nothing sleeps to let something happen.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from fed_support import all_records, signed, thread_count, wait_until
from pair_nodes import JSON, Node, act, client, create_namespaces, emit
from pair_nodes import start_node as start_any_node

from spl.daemon.launcher import DaemonProcess


async def start_node(
    factory: type[DaemonProcess], name: str, *, approval: str = "auto", auto_namespaces: tuple[str, ...] = ("default",)
) -> Node:
    """Pairs in these tests poll every 0.2 s both ways: the responder's floor is lowered to match."""
    return await start_any_node(factory, name, approval=approval, auto_namespaces=auto_namespaces, min_peer_poll=0.2)


async def records_of(http: httpx.AsyncClient, node: Node, thread: str) -> list[dict[str, Any]]:
    return await all_records(http, node.url, thread, node.headers)


async def pair(http: httpx.AsyncClient, a: Node, b: Node, **extra: Any) -> httpx.Response:
    return await http.post(f"{a.url}/v1/federation/pairs", json={"url": b.url, **extra}, headers=a.headers)


async def test_auto_pair_then_records_flow_both_ways(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        await emit(http, b, "th_shared", 1, n=1)
        answer = await pair(http, a, b, mode="polling", poll_interval=0.2)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        lines = [step["line"] for step in body["steps"]]
        assert lines[0] == "manifest fetched + signature verified"
        assert lines[1].startswith("POST /v1/federation/pair → 200 OK")
        assert body["state"] == "active" and body["role"] == "initiator"
        assert body["initial_sync"]["records"] == 1
        pair_id = body["pair_id"]
        on_b = await http.get(f"{b.url}/v1/federation/pairs/{pair_id}", headers=b.headers)
        assert on_b.status_code == 200, on_b.text
        assert on_b.json()["role"] == "responder" and on_b.json()["state"] == "active"
        await emit(http, a, "th_shared", 2, n=2)
        await wait_until(lambda: _count(http, b, "th_shared", 2), 20, "a's record on b")
        await emit(http, b, "th_shared", 3, n=3)
        await wait_until(lambda: _count(http, a, "th_shared", 3), 20, "b's record on a")
        # No echo: b holds a's record, but never serves it back to a (a signed it; it has it).
        token_from_b = (a.process.home.root / "secrets" / "pairs" / f"{pair_id}.token").read_text().strip()
        page = (
            await http.get(f"{b.url}/v1/sync/changes?namespace=default", headers={"x-api-key": token_from_b})
        ).json()
        assert {r["record"]["signer"] for r in page["records"]} == {b.did}, page
        assert page["held_back"]["theirs"] == 1


async def _count(http: httpx.AsyncClient, node: Node, thread: str, wanted: int) -> bool:
    return await thread_count(http, node.url, thread, node.headers) >= wanted


async def show(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{node.url}/v1/federation/pairs/{pair_id}", headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_manual_approval_holds_the_pair_establishing_until_the_operator_approves(
    daemon_factory: type[DaemonProcess],
) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b", approval="manual")
    async with client() as http:
        await emit(http, b, "th_manual", 1)
        answer = await pair(http, a, b, wait=0, poll_interval=0.2)
        assert answer.status_code == 202, answer.text
        pair_id = answer.json()["pair_id"]
        assert answer.json()["state"] == "establishing"
        assert (await show(http, b, pair_id))["state"] == "establishing"
        pending = (await http.get(f"{b.url}/v1/aitl", headers=b.headers)).json()["data"]
        assert [item["pair_id"] for item in pending] == [pair_id]
        assert pending[0]["initiator_did"] == a.did
        approved = await http.post(f"{b.url}/v1/aitl/{pair_id}/approve", headers=b.headers)
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "active"
        refreshed = await act(http, a, pair_id, "refresh")
        assert refreshed["state"] == "active" and refreshed["transitions"] == ["establishing → active"]
        await wait_until(lambda: _count(http, a, "th_manual", 1), 20, "b's record on a after approval")
        await emit(http, a, "th_manual", 2)
        await wait_until(lambda: _count(http, b, "th_manual", 2), 20, "a's record on b after approval")
        assert (await http.get(f"{b.url}/v1/aitl", headers=b.headers)).json()["data"] == []


async def test_an_initiator_polling_for_approval_completes_when_the_operator_approves(
    daemon_factory: type[DaemonProcess],
) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b", approval="manual")
    async with client() as http:
        answers: list[httpx.Response] = []

        async def initiate() -> None:
            answers.append(await pair(http, a, b, wait=30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(initiate)
            pending = await wait_until(lambda: _pending(http, b), 20, "the request waiting for approval on b")
            approved = await http.post(f"{b.url}/v1/aitl/{pending[0]['pair_id']}/approve", headers=b.headers)
            assert approved.status_code == 200, approved.text
        assert answers[0].status_code == 201, answers[0].text
        assert answers[0].json()["state"] == "active"


async def _pending(http: httpx.AsyncClient, node: Node) -> list[dict[str, Any]]:
    return list((await http.get(f"{node.url}/v1/aitl", headers=node.headers)).json()["data"])


async def test_a_rejected_request_is_refused_and_revoked_on_both_sides(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b", approval="manual")
    async with client() as http:
        pair_id = (await pair(http, a, b, wait=0)).json()["pair_id"]
        rejected = await http.post(f"{b.url}/v1/aitl/{pair_id}/reject", json={"reason": "not you"}, headers=b.headers)
        assert rejected.status_code == 200 and rejected.json()["state"] == "revoked"
        refused = await http.post(f"{a.url}/v1/federation/pairs/{pair_id}/refresh", headers=a.headers)
        assert refused.status_code == 502 and "PAIR_REJECTED" in refused.json()["message"], refused.text
        assert (await show(http, a, pair_id))["state"] == "revoked"


async def test_a_closed_steward_refuses_every_pair_request(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b", approval="closed")
    async with client() as http:
        manifest = (await http.get(f"{b.url}/.well-known/syncropel")).json()["federation_manifest"]
        assert manifest["consent_policy"]["default_posture"] == "closed"
        refused = await pair(http, a, b)
        assert refused.status_code == 502, refused.text
        assert "403 PAIRING_CLOSED" in refused.json()["message"]
        listed = (await http.get(f"{a.url}/v1/federation/pairs", headers=a.headers)).json()["data"]
        assert [p["state"] for p in listed] == ["revoked"]


async def paired(http: httpx.AsyncClient, a: Node, b: Node, **extra: Any) -> str:
    answer = await pair(http, a, b, **{"poll_interval": 0.2, **extra})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["pair_id"])


async def test_pause_stops_both_directions_and_resume_picks_up_from_the_cursors(
    daemon_factory: type[DaemonProcess],
) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        pair_id = await paired(http, a, b)
        paused = await act(http, a, pair_id, "pause")
        assert paused["state"] == "paused"
        await emit(http, b, "th_pause", 1)  # a does not pull while paused
        await emit(http, a, "th_pause", 2)  # and does not serve b: b's pulls are refused with PAIR_PAUSED
        failing = await wait_until(lambda: _pull_error(http, b, pair_id), 20, "b's pull refused by the paused pair")
        assert "PAIR_PAUSED" in failing
        assert await records_of(http, a, "th_pause") != [] and len(await records_of(http, a, "th_pause")) == 1
        resumed = await act(http, a, pair_id, "resume")
        assert resumed["state"] == "active"
        await wait_until(lambda: _count(http, a, "th_pause", 2), 20, "b's record on a after resume")
        await wait_until(lambda: _count(http, b, "th_pause", 2), 30, "a's record on b after resume")


async def _pull_error(http: httpx.AsyncClient, node: Node, pair_id: str) -> str | None:
    pull = (await show(http, node, pair_id))["pull"]
    error = pull.get("last_error") if pull else None
    return str(error["message"]) if error and pull["state"] == "failing" else None


async def test_set_mode_continuous_and_thread_allow_narrow_what_flows(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        pair_id = await paired(http, a, b, poll_interval=300)
        changed = await http.patch(
            f"{a.url}/v1/federation/pairs/{pair_id}", json={"mode": "continuous"}, headers=a.headers
        )
        assert changed.status_code == 200 and changed.json()["mode"] == "continuous", changed.text
        await emit(http, b, "th_live", 1)
        await wait_until(lambda: _count(http, a, "th_live", 1), 20, "a record streamed to a (continuous)")
        pull = (await show(http, a, pair_id))["pull"]
        assert pull["errors_total"] == 0 and pull["state"] == "running", pull  # streamed, not retried into
        narrowed = await http.patch(
            f"{b.url}/v1/federation/pairs/{pair_id}", json={"thread_allow": ["th_open*"]}, headers=b.headers
        )
        assert narrowed.status_code == 200 and narrowed.json()["thread_allow"] == ["th_open*"], narrowed.text
        await emit(http, b, "th_secret", 1)
        await emit(http, b, "th_open_1", 1)
        await wait_until(lambda: _count(http, a, "th_open_1", 1), 20, "the allowed thread on a")
        synced = await act(http, a, pair_id, "sync")
        assert synced["object"] == "federation_sync"
        assert await records_of(http, a, "th_secret") == []


async def test_refresh_follows_a_new_public_url_and_degrades_on_a_replaced_identity(
    daemon_factory: type[DaemonProcess],
) -> None:
    from spl.daemon.bootstrap import rotate_identity

    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        pair_id = await paired(http, a, b)
        await trio.to_thread.run_sync(b.process.stop)
        config = b.process.home.load_config()
        config.public_url = f"http://localhost:{b.process.port}"
        b.process.home.save_config(config)
        await trio.to_thread.run_sync(b.process.start)
        # b tells a its new URL by itself (a signed endpoint-moved notice, docs/federation-pairs.md); a refresh
        # then finds the manifest it already follows.
        moved = f"http://localhost:{b.process.port}"

        async def repointed() -> bool:
            return bool((await show(http, a, pair_id))["peer_url"] == moved)

        await wait_until(repointed, 20, "a re-pointed by b's endpoint-moved notice")
        refreshed = await act(http, a, pair_id, "refresh")
        assert refreshed["state"] == "active" and refreshed["peer_url"] == moved
        await emit(http, b, "th_moved", 1)
        await wait_until(lambda: _count(http, a, "th_moved", 1), 20, "records from b at its new URL")

        await trio.to_thread.run_sync(b.process.stop)
        await trio.to_thread.run_sync(rotate_identity, b.process.home)
        await trio.to_thread.run_sync(b.process.start)
        degraded = await act(http, a, pair_id, "refresh")
        assert degraded["state"] == "degraded", degraded
        assert "re-pair" in degraded["state_reason"].lower() and b.did in degraded["state_reason"]


async def test_revoke_notifies_the_peer_and_both_sides_tokens_are_refused(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        pair_id = await paired(http, a, b)
        token_from_b = (a.process.home.root / "secrets" / "pairs" / f"{pair_id}.token").read_text().strip()
        token_from_a = (b.process.home.root / "secrets" / "pairs" / f"{pair_id}.token").read_text().strip()
        feed = "/v1/sync/changes?namespace=default"
        assert (await http.get(f"{b.url}{feed}", headers={"x-api-key": token_from_b})).status_code == 200
        # A pair's token pulls the pair's feed and does nothing else: no push, no record API, no admin route.
        pushed = await http.post(
            f"{b.url}/v1/sync/records", json={"records": []}, headers={"x-api-key": token_from_b, **JSON}
        )
        assert pushed.status_code == 403 and pushed.json()["code"] == "SCOPE_FORBIDDEN", pushed.text
        for path in ("/v1/records", "/v1/threads", "/v1/federation/pairs", "/v1/consent/grants", "/v1/tokens"):
            denied = await http.get(f"{b.url}{path}", headers={"x-api-key": token_from_b})
            assert denied.status_code == 403, (path, denied.text)
        revoked = await act(http, a, pair_id, "revoke", reason="done")
        assert revoked["state"] == "revoked" and revoked["peer_notified"] is True, revoked
        assert (await show(http, b, pair_id))["state"] == "revoked"
        for node, token in ((b, token_from_b), (a, token_from_a)):
            refused = await http.get(f"{node.url}{feed}", headers={"x-api-key": token})
            assert refused.status_code == 401 and refused.json()["code"] == "TOKEN_REVOKED", refused.text
        assert not (a.process.home.root / "secrets" / "pairs" / f"{pair_id}.token").exists()
        listing = (await http.get(f"{a.url}/v1/federation/pairs", headers=a.headers)).text
        logs = a.process.log_path.read_text() + b.process.log_path.read_text()
        for token in (token_from_a, token_from_b):
            assert token not in listing and token.rpartition("_")[2] not in logs


def _request_to(b: Node, identity: Any, **overrides: Any) -> dict[str, Any]:
    import time

    from spl.core.handshake import build_pair_request

    request = build_pair_request(
        identity,
        responder_did=b.did,
        initiator_url="http://127.0.0.1:9",
        poll_interval=300.0,
        token="spl_fed_sa_x_" + "0" * 64,
        token_expires_at=time.time() + 86400,
        now=time.time(),
    )
    return {**request, **overrides}


async def test_a_forged_signature_is_401_and_a_replayed_nonce_is_410(daemon_factory: type[DaemonProcess]) -> None:
    from spl.core.identity import Identity

    b = await start_node(daemon_factory, "b")
    stranger = Identity.generate()
    async with client() as http:
        url = f"{b.url}/v1/federation/pair"
        forged = _request_to(b, stranger, initiator_url="http://127.0.0.1:10")
        refused = await http.post(url, json=forged, headers=JSON)
        assert refused.status_code == 401 and refused.json()["code"] == "HANDSHAKE_SIGNATURE_INVALID", refused.text
        other = Identity.generate()
        impostor = {**_request_to(b, other), "initiator_did": stranger.did}
        refused = await http.post(url, json=impostor, headers=JSON)
        assert refused.status_code == 401 and refused.json()["code"] == "HANDSHAKE_SIGNATURE_INVALID"
        genuine = _request_to(b, stranger)
        accepted = await http.post(url, json=genuine, headers=JSON)
        assert accepted.status_code == 200, accepted.text
        replayed = await http.post(url, json=genuine, headers=JSON)
        assert replayed.status_code == 410 and replayed.json()["code"] == "NONCE_REPLAYED", replayed.text
        stale = await http.post(url, json={**genuine, "issued_at": "2020-01-01T00:00:00Z"}, headers=JSON)
        assert stale.status_code == 401  # re-dated: the signature no longer covers it
        assert (await http.post(url, content=b"{", headers=JSON)).status_code == 400
        assert (await http.post(url, json=[1, 2], headers=JSON)).status_code == 400


async def test_an_expired_manifest_is_refused_unless_no_strict(daemon_factory: type[DaemonProcess]) -> None:
    import time

    from fake_peer import FakePeer

    from spl.core.manifest import MANIFEST_LIFETIME

    a = await start_node(daemon_factory, "a")
    peer = FakePeer(manifest_signed_at=time.time() - MANIFEST_LIFETIME - 60)
    with peer.running():
        async with client() as http:
            refused = await http.post(f"{a.url}/v1/federation/pairs", json={"url": peer.url}, headers=a.headers)
            assert refused.status_code == 502 and refused.json()["code"] == "MANIFEST_INVALID", refused.text
            assert "expired" in refused.json()["message"]
            lenient = await http.post(
                f"{a.url}/v1/federation/pairs", json={"url": peer.url, "strict": False}, headers=a.headers
            )
            # past the manifest check: the fake peer has no pair endpoint, so the POST itself is what fails
            assert lenient.json()["code"] == "PAIR_HANDSHAKE_REJECTED", lenient.text
            assert "rejected handshake: 501" in lenient.json()["message"]  # http.server has no POST


async def test_consent_nothing_crosses_namespaces_without_a_grant_l1_projects_l0_delivers(
    daemon_factory: type[DaemonProcess],
) -> None:
    """Seed 000's promise: different namespaces share nothing without a grant on th_consent; an L1 grant delivers
    verified redacted projections (never the content); a later L0 grant delivers the originals."""
    a = await start_node(daemon_factory, "a", auto_namespaces=("default", "music"))
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        await create_namespaces(http, a, "music")
        await create_namespaces(http, b, "music", "projects", "projects/music")
        originals = [await emit(http, a, "th_song", n, namespace="music", lyrics=f"secret-{n}") for n in (1, 2, 3)]
        await emit(http, a, "th_default", 1)  # the default namespace is not mapped by this pair: never sent
        pair_id = await paired(http, b, a, maps=["projects/music:music"])
        assert (await act(http, b, pair_id, "sync"))["pulled"] == 0
        assert await records_of(http, b, "th_song") == []

        grant = await http.post(
            f"{a.url}/v1/consent/grants",
            json={
                "source_namespace": "music",
                "target_namespace": "projects/music",
                "hash_levels": ["L1", "L2"],
                "peer_did": b.did,
            },
            headers=a.headers,
        )
        assert grant.status_code == 201, grant.text
        assert grant.json()["grant_id"].startswith("cg_")
        projections = await wait_until(lambda: _at_least(http, b, "th_song", 3), 20, "three projections on b")
        text = str(projections)
        assert "secret-" not in text
        for record in projections:
            body = record["body"]
            assert body["kind"] == "core.projection.v1" and body["redacted"] is True
            assert body["original_id"] in originals and body["granted_levels"] == ["L1", "L2"]
            assert set(body["hash_levels"]) == {"L1", "L2"} and record["signer"] == a.did
            assert record["namespace"] == "projects/music"

        grant = await http.post(
            f"{a.url}/v1/consent/grants",
            json={"source_namespace": "music", "target_namespace": "projects/music", "hash_levels": ["L0"]},
            headers=a.headers,
        )
        assert grant.status_code == 201, grant.text
        everything = await wait_until(lambda: _at_least(http, b, "th_song", 6), 20, "the originals on b after L0")
        assert {r["id"] for r in everything} >= set(originals)
        assert await records_of(http, b, "th_default") == []

        revoked = await http.delete(f"{a.url}/v1/consent/grants/{grant.json()['grant_id']}", headers=a.headers)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked", revoked.text
        await emit(http, a, "th_song", 4, namespace="music", lyrics="secret-4")
        await act(http, b, pair_id, "sync")
        after = await records_of(http, b, "th_song")
        assert "secret-4" not in str(after)  # forward-only: the new record arrives as a projection, if at all


async def _at_least(http: httpx.AsyncClient, node: Node, thread: str, wanted: int) -> list[dict[str, Any]] | None:
    found = await records_of(http, node, thread)
    return found if len(found) >= wanted else None


async def _push_many(http: httpx.AsyncClient, node: Node, thread: str, count: int) -> None:
    """``count`` records signed by a third instance, pushed in batches of 1,000 (fast: one commit per batch)."""
    from spl.core.identity import Identity

    third = Identity.generate()
    for first in range(1, count + 1, 1000):
        batch = [signed(third, thread, clock) for clock in range(first, min(first + 1000, count + 1))]
        pushed = await http.post(f"{node.url}/v1/sync/records", json={"records": batch}, headers=node.headers)
        assert pushed.status_code == 200 and len(pushed.json()["accepted"]) == len(batch), pushed.text[:300]


@pytest.mark.parametrize("victim", ["puller", "source"])
async def test_kill_9_during_catch_up_converges_with_nothing_lost_or_doubled(
    daemon_factory: type[DaemonProcess], victim: str
) -> None:
    """``kill -9`` of either side while a federation pair catches up: after a restart the pair converges on exactly
    the source's records (the cursor commits with the records it covers)."""
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    total = 10_000  # ten pull pages, a second or two of catch-up: the kill lands in the middle of it
    async with client() as http:
        pair_id = await paired(http, a, b, mode="on-demand")
        await _push_many(http, b, "th_bulk", total)
        changed = await http.patch(
            f"{a.url}/v1/federation/pairs/{pair_id}", json={"mode": "polling", "poll_interval": 0.2}, headers=a.headers
        )
        assert changed.status_code == 200, changed.text
        await wait_until(lambda: _between(http, a, "th_bulk", 1, total - 1), 30, "a catching up part of the way")
        killed = a if victim == "puller" else b
        await trio.to_thread.run_sync(killed.process.kill)
        await trio.to_thread.run_sync(killed.process.start)
        await wait_until(lambda: _count(http, a, "th_bulk", total), 60, "a converging after kill -9")
        ids = [record["id"] for record in await records_of(http, a, "th_bulk")]
        assert len(ids) == len(set(ids)) == total
        source = {record["id"] for record in await records_of(http, b, "th_bulk")}
        assert set(ids) == source


async def _between(http: httpx.AsyncClient, node: Node, thread: str, low: int, high: int) -> bool:
    return low <= await thread_count(http, node.url, thread, node.headers) <= high


async def test_seed_000_a_sync_pair_across_namespaces_needs_a_grant(daemon_factory: type[DaemonProcess]) -> None:
    """Seed 000 with `spl fleet sync add`: alice mints bob's token bound to bob's namespace; bob's pair on her task
    thread receives nothing until alice grants, then projections (L1), then originals (L0)."""
    alice = await start_node(daemon_factory, "alice")
    bob = await start_node(daemon_factory, "bob")
    async with client() as http:
        await create_namespaces(http, alice, "alice-team")
        await create_namespaces(http, bob, "alice-team", "bob-team")
        task = [await emit(http, alice, "th_task_0042", n, namespace="alice-team", note=f"private-{n}") for n in (1, 2)]
        minted = await http.post(
            f"{alice.url}/v1/tokens",
            json={"scopes": ["federation:sync"], "label": "bob", "target_namespace": "bob-team"},
            headers=alice.headers,
        )
        assert minted.status_code == 201 and minted.json()["target_namespace"] == "bob-team", minted.text
        token = minted.json()["token"]
        # the bound token cannot ask to land elsewhere: target_namespace in the query is overridden
        sneaky = await http.get(
            f"{alice.url}/v1/sync/changes",
            params={"thread": "th_task_0042", "target_namespace": "alice-team"},
            headers={"x-api-key": token},
        )
        assert sneaky.status_code == 200 and sneaky.json()["records"] == [], sneaky.text
        created = await http.post(
            f"{bob.url}/v1/sync/pairs",
            json={
                "peer_did": alice.did,
                "peer_url": alice.url,
                "thread_id": "th_task_0042",
                "token": token,
                "poll_interval": 0.2,
            },
            headers=bob.headers,
        )
        assert created.status_code == 201, created.text
        pair_id = created.json()["pair_id"]
        kicked = await http.post(f"{bob.url}/v1/sync/pairs/{pair_id}/kick?wait=1", headers=bob.headers)
        assert kicked.status_code == 200 and kicked.json()["state"] == "running", kicked.text
        assert await records_of(http, bob, "th_task_0042") == []

        grant = await http.post(
            f"{alice.url}/v1/consent/grants",
            json={"source_namespace": "alice-team", "target_namespace": "bob-team", "hash_levels": ["L1"]},
            headers=alice.headers,
        )
        assert grant.status_code == 201, grant.text
        projected = await wait_until(lambda: _at_least(http, bob, "th_task_0042", 2), 20, "projections on bob")
        assert "private-" not in str(projected)
        assert {r["body"]["original_id"] for r in projected} == set(task)
        full = await http.post(
            f"{alice.url}/v1/consent/grants",
            json={"source_namespace": "alice-team", "target_namespace": "bob-team", "hash_levels": ["L0"]},
            headers=alice.headers,
        )
        assert full.status_code == 201, full.text
        everything = await wait_until(lambda: _at_least(http, bob, "th_task_0042", 4), 20, "originals on bob")
        assert set(task) <= {r["id"] for r in everything}
