"""A migrated steward's peers re-point by themselves: the signed ``endpoint_moved`` notice, and DUPLICATE_STEWARD.

A migration is simulated without the importer: a stopped daemon's home (keys, config, store; not the peers'
tokens) is copied to a fresh home and started on another port. The copy holds the pair but not the peer's token,
and its recorded ``our_endpoint`` is the old URL, so it announces its new one; the peer probes both URLs and
moves (docs/federation-pairs.md, "When a steward moves"). Every daemon is a real ``spl serve`` on loopback, killed
by the fixture; every wait polls a condition against a deadline.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from fed_support import all_records, wait_until
from pair_nodes import Node, act, client, copy_node_home, emit, start_node

from spl.core.handshake import build_endpoint_moved
from spl.core.identity import Identity
from spl.daemon.launcher import DaemonProcess

THREAD = "th_moved"


async def show(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{node.url}/v1/federation/pairs/{pair_id}", headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def start_copy(factory: type[DaemonProcess], source: Node, name: str) -> Node:
    """The home copied from ``source`` (``copy_node_home``) started on a new port: the same DID at another URL."""
    process = factory(name, insecure=False)
    await trio.to_thread.run_sync(functools.partial(process.start, port=0))
    return Node(process, source.did, {**source.headers, "authorization": f"Bearer {process.admin_token}"})


async def flows(http: httpx.AsyncClient, source: Node, target: Node, clock: int) -> None:
    """A record emitted on ``source`` reaches ``target`` through the pair."""
    record_id = await emit(http, source, THREAD, clock)

    async def arrived() -> bool:
        return any(record["id"] == record_id for record in await all_records(http, target.url, THREAD, target.headers))

    await wait_until(arrived, 20, f"record {clock} from {source.url} on {target.url}")


async def test_peers_follow_a_moved_steward_and_refuse_two_live_copies(
    daemon_factory: type[DaemonProcess], tmp_path: Path
) -> None:
    peer = await start_node(daemon_factory, "p", min_peer_poll=0.2)
    a = await start_node(daemon_factory, "a", min_peer_poll=0.2)
    async with client() as http:
        created = await http.post(
            f"{a.url}/v1/federation/pairs", json={"url": peer.url, "poll_interval": 0.2}, headers=a.headers
        )
        assert created.status_code == 201, created.text
        pair_id = created.json()["pair_id"]
        assert created.json()["our_endpoint"] == a.url
        await flows(http, a, peer, 1)

        # 1. A stops; its copy B starts elsewhere and announces itself: the peer moves with no command run.
        await trio.to_thread.run_sync(a.process.stop)
        copy_node_home(a, tmp_path / "b")
        b = await start_copy(daemon_factory, a, "b")

        async def peer_points_at(node: Node) -> dict[str, Any] | None:
            shown = await show(http, peer, pair_id)
            return shown if shown["peer_url"] == node.url and shown["state"] == "active" else None

        await wait_until(lambda: peer_points_at(b), 30, "the peer re-pointing the pair to b")
        on_b = await wait_until(lambda: _active(http, b, pair_id), 20, "b's side active with the peer's new token")
        assert on_b["our_endpoint"] == b.url and on_b["tokens"]["theirs"]["present"]
        await flows(http, b, peer, 2)
        await flows(http, peer, b, 3)
        await refused_notices(http, peer, b, pair_id)

        # 2. B stops, its copy C starts, then B comes back at its URL: two live daemons hold one identity.
        await trio.to_thread.run_sync(b.process.stop)
        copy_node_home(b, tmp_path / "c")
        await trio.to_thread.run_sync(b.process.start)  # same port, so B has nothing to announce
        c = await start_copy(daemon_factory, b, "c")
        moving = await wait_until(lambda: _marked_duplicate(http, peer, pair_id), 30, "the DUPLICATE_STEWARD mark")
        assert moving["peer_url"] == b.url  # no switch while both answer
        assert b.url in moving["state_reason"] and c.url in moving["state_reason"], moving
        assert "Stop one of them" in moving["state_reason"]
        # Still pulled from the URL the pair had. (C never receives this record: the peer serves no steward the
        # records signed by its own DID, so what is written on a duplicate stays there; docs say so.)
        await flows(http, b, peer, 4)
        on_c = await show(http, c, pair_id)
        assert on_c["state"] == "degraded" and "DUPLICATE_STEWARD" in on_c["state_reason"], on_c

        # B stops for good: C's next notice (driven now instead of after its backoff) moves the pair.
        await trio.to_thread.run_sync(b.process.stop)
        refreshed = await act(http, c, pair_id, "refresh")
        assert "endpoint acknowledged by the peer" in refreshed["transitions"], refreshed
        assert refreshed["our_endpoint"] == c.url
        shown = await show(http, peer, pair_id)
        assert shown["peer_url"] == c.url and shown["state"] == "active", shown
        await flows(http, c, peer, 5)
        await flows(http, peer, c, 6)


async def _active(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any] | None:
    shown = await show(http, node, pair_id)
    return shown if shown["state"] == "active" else None


async def _marked_duplicate(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any] | None:
    shown = await show(http, node, pair_id)
    return shown if "DUPLICATE_STEWARD" in shown["state_reason"] else None


async def refused_notices(http: httpx.AsyncClient, peer: Node, mover: Node, pair_id: str) -> None:
    """Notices that must change nothing: a stranger's, one naming a dead endpoint, and that one replayed."""
    moved = f"{peer.url}/v1/federation/pair/moved"

    def notice(identity: Identity, endpoint: str) -> dict[str, Any]:
        return build_endpoint_moved(
            identity,
            pair_id=pair_id,
            receiver_did=peer.did,
            endpoint=endpoint,
            token="spl_live_sa-x_" + "ab" * 32,
            token_expires_at=time.time() + 3600,
            now=time.time(),
        )

    stranger = await http.post(moved, json=notice(Identity.generate(), "http://127.0.0.1:1"))
    assert stranger.status_code == 404 and stranger.json()["code"] == "PAIR_UNKNOWN", stranger.text
    dead = notice(mover.process.home.load_identity(), "http://127.0.0.1:1")  # signed with the pair's own key
    unverified = await http.post(moved, json=dead)
    assert unverified.status_code == 502 and unverified.json()["code"] == "ENDPOINT_UNVERIFIED", unverified.text
    replayed = await http.post(moved, json=dead)
    assert replayed.status_code == 410 and replayed.json()["code"] == "NONCE_REPLAYED", replayed.text
    shown = await show(http, peer, pair_id)
    assert shown["peer_url"] == mover.url and shown["state"] == "active", shown
