"""One owner of persistence: typed writer commands, the local-accept path and the push path.

Real actors (writer, hub, reconciler) under a real supervisor on a real SQLite file; HTTP
goes through the Quart test client of the real application, in-process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from spl.actors.hub import Hub, HubClient
from spl.actors.local import LocalRecords, SystemClock
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import StoreWriter, WriterClient
from spl.core.config import Config, InstanceSection
from spl.core.errors import Conflict, InvalidRequest, SplError
from spl.core.identity import Identity, verify_record_signature
from spl.core.namespaces import REGISTRY_THREAD
from spl.core.record import validate_envelope
from spl.core.tokens import TokenInfo, mint
from spl.runtime.supervisor import ChildSpec, Supervisor
from spl.store.database import ReadPool, connect_reader
from spl.store.queries import list_records, parked_count
from spl.store.tokens import load_tokens
from spl.transport.app import create_app
from spl.transport.auth import TokenBook
from spl.transport.services import Services

IDENTITY = Identity.generate()
PEER = Identity.generate()
JSON = {"content-type": "application/json"}


@dataclass
class Instance:
    services: Services
    writer: StoreWriter
    reconciler: Reconciler
    path: Path

    @property
    def local(self) -> LocalRecords:
        return self.services.local


@asynccontextmanager
async def instance(tmp_path: Path) -> AsyncIterator[Instance]:
    """The daemon's actors and its HTTP application, without a socket or a subprocess."""
    path = tmp_path / "hub.db"
    pool = ReadPool(path)
    writer = StoreWriter(path, subscribers=[], own_did=IDENTITY.did)
    hub, reconciler = Hub(), Reconciler()
    root = Supervisor(
        "test",
        [
            ChildSpec("sse-hub", hub.run, inbox_size=64),
            ChildSpec("store-writer", writer.run, inbox_size=64),
            ChildSpec("reconciler", reconciler.run, inbox_size=8),
        ],
    )
    writer._subscribers = [root.inbox("sse-hub")]
    writer_client = WriterClient(root.inbox("store-writer"))
    reconciler.bind(writer_client)
    services = Services(
        home_root=tmp_path,
        config=Config(instance=InstanceSection(did=IDENTITY.did)),
        identity=IDENTITY,
        pool=pool,
        writer=writer_client,
        hub=HubClient(root.inbox("sse-hub")),
        tokens=TokenBook(),
        auth_required=False,
        reconciler=ReconcilerClient(root.inbox("reconciler"), reconciler),
    )
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(root.run)
                yield Instance(services, writer, reconciler, path)
                root.shutdown()
    finally:
        pool.close()


def registry_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(r.json) for r in list_records(connect_reader(path), thread=REGISTRY_THREAD, limit=100)]


# -- namespaces: the writer decides -------------------------------------------------------------


async def test_two_concurrent_http_creates_of_one_namespace_give_one_201_and_one_409(tmp_path: Path) -> None:
    async with instance(tmp_path) as node:
        client = create_app(node.services).test_client()
        statuses: list[int] = []
        bodies: list[dict[str, Any]] = []

        async def create() -> None:
            response = await client.post("/v1/namespaces", json={"id": "acme", "description": "d"}, headers=JSON)
            statuses.append(response.status_code)
            bodies.append(await response.get_json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            nursery.start_soon(create)
        assert sorted(statuses) == [201, 409]
        conflict = bodies[statuses.index(409)]
        assert conflict["code"] == "ALREADY_EXISTS" and "already exists" in conflict["message"]
        listed = await (await client.get("/v1/namespaces")).get_json()
        assert [entry["id"] for entry in listed["data"]] == ["acme", "default"]
    assert [record["body"]["namespace_id"] for record in registry_records(tmp_path / "hub.db")] == ["acme"]


async def test_creates_queued_in_one_writer_batch_are_decided_one_at_a_time(tmp_path: Path) -> None:
    """Eight creates of one namespace and one of its child, all queued before the writer wakes:
    exactly one create wins, and the child (queued after its parent) is accepted."""
    async with instance(tmp_path) as node:
        outcomes: dict[str, list[object]] = {"acme": [], "acme/ops": []}

        async def create(namespace: str) -> None:
            try:
                outcomes[namespace].append(await node.local.create_namespace(namespace, ""))
            except (Conflict, InvalidRequest) as exc:
                outcomes[namespace].append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(create, "acme")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(create, "acme/ops")
        winners = [o for o in outcomes["acme"] if not isinstance(o, Exception)]
        losers = [o for o in outcomes["acme"] if isinstance(o, Conflict)]
        assert len(winners) == 1 and len(losers) == 7
        assert not isinstance(outcomes["acme/ops"][0], Exception)
    namespaces = [record["body"]["namespace_id"] for record in registry_records(tmp_path / "hub.db")]
    assert namespaces == ["acme", "acme/ops"]


async def test_a_child_namespace_needs_its_parent(tmp_path: Path) -> None:
    async with instance(tmp_path) as node:
        client = create_app(node.services).test_client()
        response = await client.post("/v1/namespaces", json={"id": "acme/ops"}, headers=JSON)
        body = await response.get_json()
        assert response.status_code == 400 and body["code"] == "PARENT_NAMESPACE_MISSING"
        assert "spl namespace create acme" in body["message"]


# -- tokens: typed commands, durable before the answer ------------------------------------------


async def test_mint_and_revoke_are_committed_before_they_are_answered(tmp_path: Path) -> None:
    async with instance(tmp_path) as node:
        client = create_app(node.services).test_client()
        minted = await client.post("/v1/tokens", json={"scopes": ["records:read"], "label": "ci"}, headers=JSON)
        assert minted.status_code == 201
        token = await minted.get_json()
        assert [info.token_id for info in load_tokens(connect_reader(node.path))] == [token["token_id"]]
        revoked = await client.delete(f"/v1/tokens/{token['token_id']}", headers=JSON)
        assert revoked.status_code == 200
        (stored,) = load_tokens(connect_reader(node.path))
        assert stored.revoked_at is not None
        assert node.services.tokens.get(token["token_id"]) == stored  # the book agrees with the store


async def test_revoking_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    async with instance(tmp_path) as node:
        info = TokenInfo.of_minted(mint("local"), "x", ["admin"], 1.0)
        await node.services.writer.mint_token(info)
        assert await node.services.writer.revoke_token(info.token_id, 2.0) is True
        assert await node.services.writer.revoke_token(info.token_id, 3.0) is False
        (stored,) = load_tokens(connect_reader(node.path))
        assert stored.revoked_at == 2.0


# -- the local-accept path ------------------------------------------------------------------------


def test_system_clocks_never_repeat_or_go_back() -> None:
    readings = iter([100, 100, 90, 250])
    clock = SystemClock(lambda: next(readings))
    assert [clock.next() for _ in range(4)] == [100, 101, 102, 250]


async def test_local_records_are_signed_by_the_instance_and_reserved_threads_refused(tmp_path: Path) -> None:
    async with instance(tmp_path) as node:
        envelope = validate_envelope({"act": "PUT", "actor": "did:test:c", "thread": "th_l", "clock": 1})
        first = await node.local.accept(envelope)
        again = await node.local.accept(envelope)
        assert first.created and not again.created and again.record == first.record
        stored = json.loads(first.record.json)
        assert stored["signer"] == IDENTITY.did and verify_record_signature(stored["id"], IDENTITY.did, stored["sig"])
        reserved = validate_envelope({"act": "PUT", "actor": "did:test:c", "thread": REGISTRY_THREAD, "clock": 1})
        with pytest.raises(SplError) as refused:
            await node.local.accept(reserved)
        assert refused.value.code == "RESERVED_THREAD"
        # Two system records in the same microsecond still get distinct clocks.
        a = await node.local.record_system("th_federation_pairs", {"n": 1})
        b = await node.local.record_system("th_federation_pairs", {"n": 1})
        assert a.created and b.created and json.loads(a.record.json)["clock"] < json.loads(b.record.json)["clock"]


# -- the push path goes through the reconciler ---------------------------------------------------


def signed(identity: Identity, thread: str, clock: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
    envelope = validate_envelope({"act": "PUT", "actor": identity.did, "thread": thread, "clock": clock, "body": body})
    return {**envelope.fields(), "signer": identity.did, "sig": identity.sign_record_id(envelope.id)}


async def test_a_push_is_screened_verified_and_parked_by_the_reconciler(tmp_path: Path) -> None:
    good = signed(PEER, "th_p", 1)
    forged = {**signed(PEER, "th_p", 2), "sig": signed(PEER, "th_p", 3)["sig"]}
    reserved = signed(PEER, REGISTRY_THREAD, 4)
    waiting = signed(PEER, "th_p", 5, {"namespace": "lab"})
    async with instance(tmp_path) as node:
        client = create_app(node.services).test_client()
        push = {"records": [good, forged, reserved, waiting, good]}
        response = await client.post("/v1/sync/records", json=push, headers=JSON)
        assert response.status_code == 200
        result = await response.get_json()
        assert result["object"] == "sync_ingest_result"
        assert result["accepted"] == [good["id"]] and result["duplicates"] == [good["id"]]
        assert [(r["id"], r["code"]) for r in result["refused"]] == [
            (reserved["id"], "RESERVED_THREAD"),
            (forged["id"], "SIGNATURE_INVALID"),
            (waiting["id"], "NAMESPACE_REJECTED"),
        ]
        assert node.reconciler.queue_high_water == len(push["records"])  # it passed the reconciler
        assert node.reconciler.queue_depth == 0
        assert parked_count(connect_reader(node.path)) == 1
