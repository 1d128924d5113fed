"""Export and import between real daemons with auth on (issue 11): the round trip the seed calls a release gate.

A is populated (threads in two namespaces, a consent grant), exported over ``POST /v1/portability/export`` and
imported into a fresh B over ``POST /v1/portability/import``. Then: every thread holds the same records with the
same ids on both; B answers as A's DID without a restart, folds A's namespaces and grants as its own, and signs
new records as that DID; a second import inserts nothing; a bundle with one flipped byte is refused and nothing is
written; a store with records of its own is refused; ``kill -9`` after the upload and a re-run ends exact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from fed_support import wait_until
from pair_nodes import JSON, Node, client, create_namespaces, emit, start_node

from spl.core.genesis import GENESIS_KIND, GENESIS_THREADS
from spl.core.identity import verify_record_signature
from spl.daemon.launcher import DaemonProcess

ZSTD = {"content-type": "application/zstd"}


async def export_to(http: httpx.AsyncClient, node: Node, path: Path, **options: Any) -> None:
    async with http.stream("POST", f"{node.url}/v1/portability/export", json=options, headers=node.headers) as reply:
        assert reply.status_code == 200, await reply.aread()
        with path.open("wb") as out:
            async for chunk in reply.aiter_bytes():
                out.write(chunk)


async def leave_mid_export(node: Node) -> None:
    """Ask for an uncompressed export on a raw connection, read its first bytes and hang up."""
    body = b'{"compress": false}'
    head = (
        f"POST /v1/portability/export HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: {node.headers['authorization']}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", node.process.port)
    async with stream:
        await stream.send_all(head + body)
        first = await stream.receive_some(4096)
        assert first.startswith(b"HTTP/1.1 200") and b"application/x-tar" in first


async def import_into(http: httpx.AsyncClient, node: Node, blob: bytes, **params: str) -> httpx.Response:
    headers = {**node.headers, **ZSTD}
    return await http.post(f"{node.url}/v1/portability/import", content=blob, params=params, headers=headers)


async def thread_ids(http: httpx.AsyncClient, node: Node) -> list[str]:
    reply = await http.get(f"{node.url}/v1/threads", params={"limit": 100}, headers=node.headers)
    assert reply.status_code == 200, reply.text
    return sorted(thread["thread_id"] if "thread_id" in thread else thread["id"] for thread in reply.json()["data"])


async def thread_digest(http: httpx.AsyncClient, node: Node, thread: str, *, genesis_of: str | None = None) -> str:
    """What `spl thread records T | sha256sum` compares: the content-addressed fields, in sequence order.

    ``genesis_of``: leave out the genesis records that DID wrote on the reserved threads: a steward's own, from
    its ``spl init``, which stay beside an imported log (they are no part of the bundle's).
    """
    reply = await http.get(f"{node.url}/v1/records", params={"thread": thread, "limit": 1000}, headers=node.headers)
    assert reply.status_code == 200, reply.text
    kept = ("id", "act", "actor", "thread", "clock", "body", "parents", "data_type", "signer", "sig")
    records = [
        record
        for record in reply.json()["data"]
        if not (record["signer"] == genesis_of and record["body"].get("kind") == GENESIS_KIND)
    ]
    lines = [json.dumps({key: record.get(key) for key in kept}, sort_keys=True) for record in records]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


async def record_count(http: httpx.AsyncClient, node: Node) -> int:
    reply = await http.get(f"{node.url}/v1/status", headers=node.headers)
    assert reply.status_code == 200, reply.text
    status = reply.json()
    return int(status.get("record_count", status.get("records", 0)))


async def populate(http: httpx.AsyncClient, node: Node) -> None:
    await create_namespaces(http, node, "acme", "acme/ops")
    for clock in range(1, 13):
        await emit(http, node, f"th_portable_{clock % 3}", clock, text=f"record {clock} \u00e9\u2028")
    for clock in range(1, 5):
        await emit(http, node, "th_ops", clock, namespace="acme/ops")
    grant = {"source_namespace": "acme/ops", "target_namespace": "default", "hash_levels": ["L0"]}
    reply = await http.post(f"{node.url}/v1/consent/grants", json=grant, headers=node.headers)
    assert reply.status_code in (200, 201), reply.text


async def test_round_trip_adopts_the_identity_and_keeps_every_thread(
    daemon_factory: type[DaemonProcess], tmp_path: Path
) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        await populate(http, a)
        bundle = tmp_path / "migration.tar.zst"
        await export_to(http, a, bundle)
        blob = bundle.read_bytes()

        # One flipped byte anywhere: refused, nothing written (and B keeps its own identity).
        for position in (len(blob) // 3, len(blob) - 40):
            damaged = bytearray(blob)
            damaged[position] ^= 0x20
            reply = await import_into(http, b, bytes(damaged))
            assert reply.status_code == 400, reply.text
            assert reply.json()["code"] in ("BUNDLE_MALFORMED", "BUNDLE_SIGNATURE_INVALID")
        assert await thread_ids(http, b) == sorted(GENESIS_THREADS)  # only B's own genesis records

        reply = await import_into(http, b, blob)
        assert reply.status_code == 200, reply.text
        summary = reply.json()
        assert summary["identity"] == "adopted" and summary["instance_did"] == a.did
        assert summary["records_inserted"] == summary["records_inspected"] > 16
        assert summary["records_deduplicated"] == summary["records_skipped"] == summary["records_failed"] == 0

        # B is A now: same DID (no restart), same threads, same records.
        identity = (await http.get(f"{b.url}/v1/identity", headers=b.headers)).json()
        assert identity["did"] == a.did
        threads = await thread_ids(http, a)
        assert threads == await thread_ids(http, b) and len(threads) >= 4
        for thread in threads:
            assert await thread_digest(http, a, thread) == await thread_digest(http, b, thread, genesis_of=b.did), (
                thread
            )
        # A's namespaces and grants fold as B's own configuration.
        namespaces = (await http.get(f"{b.url}/v1/namespaces", headers=b.headers)).json()["data"]
        assert "acme/ops" in {entry["id"] for entry in namespaces}
        grants = (await http.get(f"{b.url}/v1/consent/grants", headers=b.headers)).json()["data"]
        assert [grant["source_namespace"] for grant in grants] == ["acme/ops"]
        # Same actors (seed 004 step 6: `spl actor list` matches), the instance first.
        actors_a = (await http.get(f"{a.url}/v1/actors", headers=a.headers)).json()["data"]
        assert actors_a == (await http.get(f"{b.url}/v1/actors", headers=b.headers)).json()["data"]
        assert actors_a[0]["did"] == a.did and actors_a[0]["kind"] == "instance"
        assert {"did:test:fp"} <= {actor["did"] for actor in actors_a}
        # New records on B are signed as the adopted DID, and land in an imported namespace.
        await emit(http, b, "th_after", 1, namespace="acme/ops")
        after = (await http.get(f"{b.url}/v1/records", params={"thread": "th_after"}, headers=b.headers)).json()
        (record,) = after["data"]
        assert record["signer"] == a.did and verify_record_signature(record["id"], a.did, record["sig"])

        # Again: nothing inserted, everything de-duplicated (B's own new record is not the bundle's business,
        # but it is a record of its own: a plain re-import is refused, a forced one de-duplicates).
        refused = await import_into(http, b, blob)
        assert refused.status_code == 409 and refused.json()["code"] == "IMPORT_REFUSED"
        assert "local store has 1 records; pass --force-overwrite" in refused.json()["message"]
        again = (await import_into(http, b, blob, force_overwrite="true")).json()
        assert again["records_inserted"] == 0 and again["records_deduplicated"] == summary["records_inspected"]


async def test_no_identity_bundle_keeps_the_local_identity_and_kill_9_then_rerun_is_exact(
    daemon_factory: type[DaemonProcess], tmp_path: Path
) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        for clock in range(1, 151):
            await emit(http, a, f"th_bulk_{clock % 7}", clock, text="x" * 200)
        bundle = tmp_path / "bulk.tar.zst"
        await export_to(http, a, bundle, identity=False)
        blob = bundle.read_bytes()

        # kill -9 while the import runs (the upload is spooled, then verified and committed), then run it again.
        async with trio.open_nursery() as nursery:

            async def doomed() -> None:
                with pytest.raises(httpx.HTTPError):
                    await import_into(http, b, blob)

            nursery.start_soon(doomed)
            run_dir = b.process.home.root / "run"
            await wait_until(lambda: any(run_dir.glob("import-*.part")), 30, "the upload to be spooled", interval=0.005)
            b.process.kill()
        await trio.to_thread.run_sync(b.process.start)
        reply = await import_into(http, b, blob)
        assert reply.status_code == 200, reply.text
        summary = reply.json()
        # A's 150 records and the genesis records of its reserved threads (written by its `spl init`).
        inspected = 150 + len(GENESIS_THREADS)
        assert (
            summary["records_inserted"] + summary["records_deduplicated"] == summary["records_inspected"] == inspected
        )
        assert summary["identity"] == "kept" and summary["instance_did"] == b.did != a.did
        assert not any((b.process.home.root / "run").glob("import-*.part"))
        for thread in await thread_ids(http, a):
            assert await thread_digest(http, a, thread) == await thread_digest(http, b, thread, genesis_of=b.did), (
                thread
            )

        dry = (await import_into(http, b, blob, dry_run="true")).json()
        assert dry["dry_run"] and dry["records_inserted"] == 0 and dry["records_deduplicated"] == inspected

        # A client that leaves mid-export stops it; the next export is whole.
        await leave_mid_export(a)
        await export_to(http, a, tmp_path / "again.tar.zst", identity=False)
        assert (tmp_path / "again.tar.zst").read_bytes()[:4] == bytes.fromhex("28b52ffd")
        assert (
            await import_into(http, b, (tmp_path / "again.tar.zst").read_bytes(), dry_run="true")
        ).status_code == 200

        # Only an admin may import or export.
        minted = await http.post(
            f"{b.url}/v1/tokens", json={"label": "reader", "scopes": ["records:read"]}, headers=b.headers
        )
        assert minted.status_code in (200, 201), minted.text
        reader = {"authorization": f"Bearer {minted.json()['token']}", **JSON}
        denied = await http.post(f"{b.url}/v1/portability/export", json={}, headers=reader)
        assert denied.status_code == 403
        denied = await http.post(f"{b.url}/v1/portability/import", content=blob, headers={**reader, **ZSTD})
        assert denied.status_code == 403


async def test_a_paired_peer_re_points_after_a_migration_without_manual_steps(
    daemon_factory: type[DaemonProcess], tmp_path: Path
) -> None:
    """Acceptance 5: export A, stop it, import into a fresh B: the peer moves the pair to B by itself."""
    peer = await start_node(daemon_factory, "p", min_peer_poll=0.2)
    a = await start_node(daemon_factory, "a", min_peer_poll=0.2)
    b = await start_node(daemon_factory, "b", min_peer_poll=0.2)
    async with client() as http:
        created = await http.post(
            f"{a.url}/v1/federation/pairs", json={"url": peer.url, "poll_interval": 0.2}, headers=a.headers
        )
        assert created.status_code == 201, created.text
        pair_id = created.json()["pair_id"]
        await arrives(http, a, peer, 1)
        bundle = tmp_path / "migration.tar.zst"
        await export_to(http, a, bundle)
        await trio.to_thread.run_sync(a.process.stop)

        summary = (await import_into(http, b, bundle.read_bytes())).json()
        assert summary["identity"] == "adopted" and summary["federation_pairs"] == 1, summary
        b = Node(b.process, a.did, b.headers)

        async def peer_points_at_b() -> dict[str, Any] | None:
            shown = (await http.get(f"{peer.url}/v1/federation/pairs/{pair_id}", headers=peer.headers)).json()
            return shown if shown["peer_url"] == b.url and shown["state"] == "active" else None

        await wait_until(peer_points_at_b, 30, "the peer re-pointing the pair to the imported steward")
        mine = (await http.get(f"{b.url}/v1/federation/pairs/{pair_id}", headers=b.headers)).json()
        assert mine["pair_id"] == pair_id and mine["peer_did"] == peer.did
        await arrives(http, b, peer, 2)
        await arrives(http, peer, b, 3)


async def arrives(http: httpx.AsyncClient, source: Node, target: Node, clock: int) -> None:
    """A record emitted on ``source`` reaches ``target`` through their pair."""
    record_id = await emit(http, source, "th_paired", clock)

    async def arrived() -> bool:
        reply = await http.get(f"{target.url}/v1/records/{record_id}", headers=target.headers)
        return reply.status_code == 200

    await wait_until(arrived, 20, f"record {clock} from {source.url} on {target.url}")
