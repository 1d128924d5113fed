"""Acceptance 3 of issue 14: ``spl identity rotate`` under live sync keeps every pair, and loses no record.

Two real daemons, each pulling the other's thread over a continuous sync pair, joined by a continuous federation
pair; both emit without pause while one rotates its key. Then: every record is on both sides, none refused, every
pair is running/active again by itself, every stored record still verifies by its own signature, and the manifest
lists both keys. The negative test swaps a stopped peer's key file by hand (no chain): its pairs refuse it.
Every wait polls a condition against a deadline; the daemons are killed by the fixture.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import httpx
import trio
from fed_support import all_records, wait_until
from pair_nodes import Node, act, client, emit, start_node

from spl.core.identity import Identity, verify_record_signature
from spl.core.manifest import manifest_keys, signed_manifest_did
from spl.daemon.launcher import DaemonProcess


async def sync_pair(http: httpx.AsyncClient, on: Node, source: Node, thread: str) -> str:
    """A continuous sync pair on ``on`` pulling ``thread`` from ``source`` (with the source's admin token)."""
    payload = {
        "peer_did": source.did,
        "peer_url": source.url,
        "thread_id": thread,
        "mode": "continuous",
        "poll_interval": 3600,
        "token": source.process.admin_token,
    }
    response = await http.post(f"{on.url}/v1/sync/pairs", json=payload, headers=on.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["pair_id"])


async def sync_status(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{node.url}/v1/sync/pairs/{pair_id}", headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def fed_status(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any]:
    response = await http.get(f"{node.url}/v1/federation/pairs/{pair_id}", headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def manifest(http: httpx.AsyncClient, node: Node) -> tuple[str, dict[str, Any]]:
    response = await http.get(f"{node.url}/.well-known/syncropel")
    return signed_manifest_did(response.content, where=node.url, now=time.time())


async def ids_on(http: httpx.AsyncClient, node: Node, thread: str) -> set[str]:
    return {record["id"] for record in await all_records(http, node.url, thread, node.headers)}


async def all_verify(http: httpx.AsyncClient, node: Node, threads: list[str]) -> int:
    """Re-verify every stored record of ``threads`` on ``node`` by its own signer and signature; the count."""
    checked = 0
    for thread in threads:
        for record in await all_records(http, node.url, thread, node.headers):
            assert verify_record_signature(record["id"], record["signer"], record["sig"]), (node.url, record)
            checked += 1
    return checked


async def test_rotation_under_live_sync_keeps_every_pair_and_record(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a", min_peer_poll=0.2)
    b = await start_node(daemon_factory, "b", min_peer_poll=0.2)
    old_key = a.did
    threads = {"a": "th_rot_a", "b": "th_rot_b"}
    async with client() as http:
        with trio.fail_after(60):
            paired = await http.post(
                f"{a.url}/v1/federation/pairs",
                json={"url": b.url, "mode": "continuous", "poll_interval": 0.2},
                headers=a.headers,
            )
            assert paired.status_code == 201, paired.text
            fed = paired.json()["pair_id"]
            on_b = await sync_pair(http, b, a, threads["a"])  # b pulls a's thread
            on_a = await sync_pair(http, a, b, threads["b"])  # a pulls b's thread

            emitted: dict[str, list[str]] = {"a": [], "b": []}
            rotated = trio.Event()
            after_rotation = 0

            async def emitter(name: str, node: Node) -> None:
                nonlocal after_rotation
                clock = 0
                while not (rotated.is_set() and after_rotation >= 10):
                    clock += 1
                    emitted[name].append(await emit(http, node, threads[name], clock))
                    if rotated.is_set() and name == "a":
                        after_rotation += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(emitter, "a", a)
                nursery.start_soon(emitter, "b", b)
                await wait_until(lambda: _at_least(emitted, 5), 10, "5 records emitted on each side")
                answer = await http.post(f"{a.url}/v1/identity/rotate", json={}, headers=a.headers)
                assert answer.status_code == 200, answer.text
                rotated.set()
            result = answer.json()
            assert result["did"] == a.did and result["previous_key"] == old_key and result["key"] != old_key

            # Nothing lost: each thread converges on both sides to exactly what was emitted.
            for name, thread in threads.items():
                expected = set(emitted[name])
                for node in (a, b):
                    await wait_until(
                        functools.partial(_holds, http, node, thread, expected), 20, f"{thread} complete on {node.url}"
                    )
            # The records a signed after the rotation carry the new key, and verify by themselves on both sides.
            late = await all_records(http, b.url, threads["a"], b.headers)
            assert {record["signer"] for record in late} == {old_key, result["key"]}
            for node in (a, b):
                assert await all_verify(http, node, list(threads.values())) == sum(map(len, emitted.values()))

            # Every pair is running / active by itself; nothing was refused.
            for node, pair_id in ((b, on_b), (a, on_a)):
                status = await wait_until(
                    functools.partial(_running, http, node, pair_id), 15, f"sync pair {pair_id} running"
                )
                assert status["records_refused"] == {}, status
            for node in (a, b):
                shown = await fed_status(http, node, fed)
                assert shown["state"] == "active" and shown["pull"]["records_refused"] == {}, shown

            # a's first notice signed with its new key: b fetches a's manifest, verifies the chain from the DID it
            # pinned, records the new key, and accepts the notice, with no command run on b.
            synced = await act(http, a, fed, "sync")
            assert synced["peer"]["error"] is None, synced
            refreshed = await act(http, b, fed, "refresh")
            assert refreshed["state"] == "active", refreshed
            assert not any("rotated" in line for line in refreshed["transitions"]), refreshed  # already learnt
            assert [step["next_key"] for step in refreshed["peer_manifest"]["rotations"]] == [result["key"]]

            # The manifest keeps a's DID, lists both keys (the old one with its end), and is signed by the new one.
            did, document = await manifest(http, a)
            assert did == a.did == old_key
            assert manifest_keys(document) == (old_key, result["key"])
            windows = document["keys"]
            assert [window["id"] for window in windows] == [old_key, result["key"]]
            assert windows[0]["valid_until"] == windows[1]["valid_from"] and windows[1]["valid_until"] is None
            assert document["signature"]["key_id"] == f"{result['key']}#key-1"
            keys = await http.get(f"{a.url}/v1/identity/keys", headers=a.headers)
            assert keys.status_code == 200 and [k["id"] for k in keys.json()["keys"]] == [old_key, result["key"]]

            # A second rotation, seen this time by an operator's refresh on b: one more step verified.
            again = await http.post(f"{a.url}/v1/identity/rotate", json={}, headers=a.headers)
            assert again.status_code == 200 and again.json()["previous_key"] == result["key"], again.text
            refreshed = await act(http, b, fed, "refresh")
            assert refreshed["state"] == "active", refreshed
            assert f"peer rotated its key: 1 step(s) verified, now {again.json()['key']}" in refreshed["transitions"]


async def test_a_key_replaced_without_a_chain_degrades_the_pairs(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a", min_peer_poll=0.2)
    b = await start_node(daemon_factory, "b", min_peer_poll=0.2)
    async with client() as http:
        with trio.fail_after(60):
            paired = await http.post(
                f"{a.url}/v1/federation/pairs", json={"url": b.url, "poll_interval": 0.2}, headers=a.headers
            )
            assert paired.status_code == 201, paired.text
            fed = paired.json()["pair_id"]
            on_a = await sync_pair(http, a, b, "th_swap")
            await wait_until(functools.partial(_running, http, a, on_a), 15, "the sync pair running")

            # b's key file is replaced by hand while it is stopped: its config still names its DID, no chain.
            await trio.to_thread.run_sync(b.process.stop)
            b.process.home.key_path.write_bytes(Identity.generate().seed)
            await trio.to_thread.run_sync(b.process.start)

            refreshed = await act(http, a, fed, "refresh")
            assert refreshed["state"] == "degraded", refreshed
            assert "not linked to its DID" in refreshed["state_reason"], refreshed

            async def refused() -> dict[str, Any] | None:
                status = await sync_status(http, a, on_a)
                error = status.get("last_error") or {}
                return status if error.get("code") == "MANIFEST_INVALID" else None

            status = await wait_until(refused, 20, "the sync pair refusing b's manifest")
            assert "not the current key of its rotation chain" in status["last_error"]["message"], status


async def _at_least(emitted: dict[str, list[str]], count: int) -> bool:
    return all(len(ids) >= count for ids in emitted.values())


async def _holds(http: httpx.AsyncClient, node: Node, thread: str, expected: set[str]) -> bool:
    return await ids_on(http, node, thread) == expected


async def _running(http: httpx.AsyncClient, node: Node, pair_id: str) -> dict[str, Any] | None:
    status = await sync_status(http, node, pair_id)
    return status if status["state"] == "running" else None
