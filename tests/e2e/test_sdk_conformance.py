"""Spec §14 conformance: the unmodified official SDK (``syncropel==0.7.0``) against real daemons.

Each test is named ``test_NN_…`` after the §14 checklist item it covers (items 32/33 —
rich query and semantic search — are optional and not covered). The SDK is asyncio-based,
so every test is a plain function that runs its scenario with :func:`e2e_support.run`
(a hard time guard). Tests that do not stop or reconfigure a daemon share the
module-scoped ``node`` (auth off, 0.5 s heartbeats) or ``secure_node`` (auth on) and use
their own thread names (``cNN.*``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import FaultProxy, StreamGate, Watch, assert_error, configure, envelope, make_daemon, mint_token, run
from syncropel import Client, EmitResult, Identity, SubscribeError
from syncropel import canonical_json as sdk_canonical_json

from spl.core.genesis import GENESIS_KIND
from spl.daemon.launcher import DaemonProcess

HASHED = ("act", "actor", "body", "clock", "data_type", "parents", "thread")
RECORD_FIELDS = ("id", "act", "actor", "body", "clock", "data_type", "parents", "thread")
ME = "did:test:me"

# Spec §2.6 vectors.
V1 = {
    "act": "INTEND",
    "actor": "did:sync:user:alice",
    "body": {"goal": "Deploy the authentication service v2"},
    "clock": 0,
    "data_type": "SCALAR",
    "parents": [],
    "thread": "th_7f3a8b2c",
}
V1_ID = "c5c11f41fc7c02f80ce1ae84a86f308317b4edd6ef1ad6af2e2862050f0cbc05"
V1_SIX_FIELD_ID = "01570b052c72324b341f1afcbed668c3899f5bc08fe60ace33d2ee1ac4d22e1f"
V2_ID = "0821a443f992d4bed825069846e74da3fdbf8d00ebef5447e6fa370cd128acc0"
V3 = {
    "act": "KNOW",
    "actor": ME,
    "body": {"z": 1.0, "a": {"y": [1, 2.5, "ü"], "x": None}, "kind": "core.outcome", "_v": 1},
    "clock": 1729000000001,
    "data_type": "SCALAR",
    "parents": ["b" * 64, "a" * 64],
    "thread": "th_" + "0" * 64,
}
V3_SORTED_ID = "7703cc2ca6f8ac12559136cdbab0b5fb85f188186940835da448005405d312f8"
V3_AS_GIVEN_ID = "60c098a0bcadca7b433aa847b71d185684de33ccf2a3cbd71b555a903bc165ea"
V4 = {
    "act": "DO",
    "actor": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
    "body": {
        "name": "Zoë",
        "emoji": "🎵",
        "ctl": "\u0007",
        "tab": "a\tb",
        "q": 'say "hi"',
        "small": 0.1,
        "tiny": 1e-7,
        "big": 1e21,
        "neg": -2.50,
        "kind": "x.test.sample",
        "_v": 1,
    },
    "clock": 1729000000000,
    "data_type": "VOID",
    "parents": [],
    "thread": "th_" + "ab" * 32,
}
V4_ID = "4ca09572378113aeb973817cc1eb9305ffcc140053c636c3c90f4f236b5f3f8d"


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The shared auth-off daemon; heartbeats every 0.5 s so item 38 runs quickly."""
    process = make_daemon(tmp_path_factory.mktemp("conformance") / "home", heartbeat_seconds=0.5)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def secure_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The shared auth-on daemon (default configuration)."""
    process = make_daemon(tmp_path_factory.mktemp("conformance-secure") / "home", insecure=False)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def tokens(secure_node: DaemonProcess) -> dict[str, str]:
    return {
        "rw": mint_token(secure_node, ["records:read", "records:write"], "conformance rw"),
        "ro": mint_token(secure_node, ["records:read"], "conformance ro"),
    }


def sdk(endpoint: str, actor: str = ME, **kwargs: Any) -> Client:
    return Client(endpoint=endpoint, identity=Identity.static(actor), **kwargs)


def sdk_id(record: dict[str, Any]) -> str:
    """The id the SDK's own canonical JSON gives for a record's seven hashed fields."""
    return hashlib.sha256(sdk_canonical_json({key: record[key] for key in HASHED}).encode("utf-8")).hexdigest()


def post(process: DaemonProcess, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{process.url}/v1/records", json=payload, headers=headers, timeout=10.0)


def listing(process: DaemonProcess, thread: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = httpx.get(f"{process.url}/v1/threads/{thread}/records?limit=10000", headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert isinstance(data, list)
    return data


def ok(result: EmitResult) -> EmitResult:
    assert result.success, result
    assert result.record_id and re.fullmatch(r"[0-9a-f]{64}", result.record_id), result
    return result


class Subscriber:
    """SDK subscription callbacks, each feeding a :class:`Watch`."""

    def __init__(self) -> None:
        self.records = Watch()
        self.errors = Watch()
        self.opens = Watch()
        self.heartbeats = Watch()
        self.sub: Any = None

    def start(self, client: Client, thread: str, **kwargs: Any) -> Subscriber:
        kwargs.setdefault("reconnect_base_s", 0.05)
        kwargs.setdefault("reconnect_max_s", 0.5)
        self.sub = client.subscribe(
            thread,
            self.records,
            on_error=self.errors,
            on_open=self.opens,
            on_heartbeat=self.heartbeats,
            **kwargs,
        )
        return self

    def ids(self) -> list[str]:
        return [record["id"] for record in self.records.items]

    async def wait_ids(self, ids: list[str], within: float = 10.0) -> None:
        wanted = set(ids)
        await self.records.wait_until(
            lambda items: wanted <= {record["id"] for record in items}, within, f"records {sorted(wanted)}"
        )

    def reasons(self) -> list[str]:
        return [error.reason for error in self.errors.items]


async def emit_one(client: Client, thread: str, **body: Any) -> str:
    result = ok(await client.emit(act="PUT", kind="x.e2e.sample", body=body, thread=thread))
    assert result.record_id is not None
    return result.record_id


# -- Health (items 1-3) ----------------------------------------------------------------


def test_01_health_is_json_ok(node: DaemonProcess) -> None:
    response = httpx.get(f"{node.url}/health", timeout=10.0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == "ok"

    async def scenario() -> dict[str, Any]:
        async with sdk(node.url) as client:
            return await client.health()

    health = run(scenario)
    assert health and health["status"] == "ok"


def test_02_health_needs_no_credentials_with_auth_on(secure_node: DaemonProcess) -> None:
    # Auth really is on: a write without credentials is refused ...
    assert_error(post(secure_node, envelope("c02.t", 1)), 401, "AUTH_REQUIRED")
    # ... but /health answers anyone.
    response = httpx.get(f"{secure_node.url}/health", timeout=10.0)
    assert response.status_code == 200 and response.json()["status"] == "ok"

    async def scenario() -> dict[str, Any]:
        async with sdk(secure_node.url) as client:
            return await client.health()

    assert run(scenario)["status"] == "ok"


def test_03_health_of_a_stopped_daemon_is_empty(daemon: DaemonProcess) -> None:
    url = daemon.url
    assert daemon.stop() == 0

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], EmitResult]:
        async with sdk(url, max_retries=0) as client:
            health = await client.health()
            records = await client.query_thread("c03.t")
            result = await client.emit(act="PUT", kind="x.e2e.sample", body={}, thread="c03.t")
            return health, records, result

    health, records, result = run(scenario)
    assert health == {}
    assert records == []
    assert not result.success and result.error


# -- Emit / ingest (items 4-21) ----------------------------------------------------------


def test_04_emit_returns_the_v2_id(node: DaemonProcess) -> None:
    async def scenario() -> EmitResult:
        async with sdk(node.url) as client:
            return await client.emit(
                act="PUT", kind="music.catalog.track", body={"title": "Glow"}, thread="music.library", clock=1
            )

    result = run(scenario)
    assert result.success and result.retried == 0
    assert result.record_id == V2_ID
    assert result.clock == 1


def test_05_post_response_is_the_full_record(node: DaemonProcess) -> None:
    payload = envelope("c05.t", 1, body={"kind": "x.e2e.sample", "_v": 1, "n": 5})
    response = post(node, payload)
    assert 200 <= response.status_code < 300
    assert response.headers["content-type"].startswith("application/json")
    record = response.json()
    assert record["object"] == "record"
    assert re.fullmatch(r"[0-9a-f]{64}", record["id"])
    for key in HASHED:
        assert record[key] == payload[key], key
    assert isinstance(record["sequence"], int) and record["sequence"] >= 1
    assert record["id"] == sdk_id(payload)


def test_06_ids_match_the_v1_and_v2_vectors(node: DaemonProcess) -> None:
    response = post(node, V1)
    assert response.status_code in (200, 201), response.text
    assert response.json()["id"] == V1_ID != V1_SIX_FIELD_ID
    (stored,) = listing(node, "th_7f3a8b2c")
    assert stored["id"] == V1_ID == sdk_id(stored)
    fetched = httpx.get(f"{node.url}/v1/records/{V1_ID}", timeout=10.0)
    assert fetched.status_code == 200 and fetched.json()["id"] == V1_ID


def test_07_float_unicode_and_control_vectors(node: DaemonProcess) -> None:
    # V3: parents arrive unsorted; the daemon sorts them (spec §15.4) so the sorted id wins.
    response = post(node, V3)
    assert response.status_code in (200, 201), response.text
    record = response.json()
    assert record["id"] == V3_SORTED_ID != V3_AS_GIVEN_ID
    assert record["parents"] == ["a" * 64, "b" * 64]
    same = post(node, {**V3, "parents": ["a" * 64, "b" * 64]})
    assert same.status_code == 200 and same.json()["id"] == V3_SORTED_ID
    # V4: integral floats, tiny floats, emoji, control characters.
    response = post(node, V4)
    assert response.status_code in (200, 201), response.text
    assert response.json()["id"] == V4_ID
    # What the daemon serves hashes back to the same ids with the SDK's canonical JSON.
    for thread, rid in ((V3["thread"], V3_SORTED_ID), (V4["thread"], V4_ID)):
        (stored,) = listing(node, thread)
        assert stored["id"] == rid == sdk_id(stored)
    (v4,) = listing(node, V4["thread"])
    assert v4["body"]["emoji"] == "🎵" and v4["body"]["ctl"] == "\u0007" and v4["body"]["name"] == "Zoë"


def test_08_judged_by_and_unknown_keys_stay_out_of_the_id(node: DaemonProcess) -> None:
    plain = envelope("c08.t", 1)
    expected = sdk_id(plain)
    extras = {
        "judged_by": "c" * 64,
        "id": "f" * 64,
        "object": "something",
        "sequence": 999,
        "sig": "not-a-signature",
        "signer": "did:example:mallory",
        "x_unknown": {"nested": [1, 2]},
    }
    response = post(node, {**plain, **extras})
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["id"] == expected
    assert record["judged_by"] == "c" * 64
    assert record["sequence"] != 999 and record["signer"] != "did:example:mallory"
    # Re-posting without the extras is the same record.
    again = post(node, plain)
    assert again.status_code == 200 and again.json()["id"] == expected
    assert [r["id"] for r in listing(node, "c08.t")] == [expected]


def test_09_identical_resubmission_is_idempotent(node: DaemonProcess) -> None:
    payload = envelope("c09.t", 7, body={"kind": "x.e2e.sample", "_v": 1, "v": "same"})
    first, second = post(node, payload), post(node, payload)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["sequence"] == second.json()["sequence"]

    async def scenario() -> tuple[EmitResult, EmitResult]:
        async with sdk(node.url) as client:
            a = await client.emit(act="PUT", kind="x.e2e.sample", body={"v": 1}, thread="c09.sdk", clock=3)
            b = await client.emit(act="PUT", kind="x.e2e.sample", body={"v": 1}, thread="c09.sdk", clock=3)
            return a, b

    a, b = run(scenario)
    assert ok(a).record_id == ok(b).record_id and a.retried == b.retried == 0
    assert [r["id"] for r in listing(node, "c09.t")] == [first.json()["id"]]
    assert [r["id"] for r in listing(node, "c09.sdk")] == [a.record_id]


def test_10_duplicate_clock_is_refused(node: DaemonProcess) -> None:
    thread = "c10.t"
    assert post(node, envelope(thread, 5, actor=ME)).status_code == 201
    clash = envelope(thread, 5, actor=ME, body={"kind": "x.e2e.sample", "_v": 1, "different": True})
    body = assert_error(post(node, clash), 409, "DUPLICATE_CLOCK")
    assert f"DuplicateClock: thread={thread} actor={ME} clock=5" in body["message"]

    async def scenario() -> EmitResult:
        async with sdk(node.url) as client:
            return await client.emit(act="PUT", kind="x.e2e.sample", body={"other": 1}, thread=thread, clock=5)

    result = run(scenario)
    assert result.success is False
    assert result.retried == 0
    assert result.error is not None and result.error.startswith("HTTP 4") and "DuplicateClock" in result.error
    assert len(listing(node, thread)) == 1


def test_11_same_clock_different_actor_is_accepted(node: DaemonProcess) -> None:
    a = post(node, envelope("c11.t", 5, actor="did:test:a"))
    b = post(node, envelope("c11.t", 5, actor="did:test:b"))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert len(listing(node, "c11.t")) == 2


def test_12_same_clock_different_thread_is_accepted(node: DaemonProcess) -> None:
    a, b = post(node, envelope("c12.a", 5)), post(node, envelope("c12.b", 5))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_13_auto_clocks_in_a_tight_loop(node: DaemonProcess) -> None:
    async def scenario() -> tuple[list[EmitResult], list[EmitResult]]:
        async with sdk(node.url) as client:
            sequential = [
                await client.emit(act="PUT", kind="x.e2e.sample", body={"i": i}, thread="c13.seq") for i in range(50)
            ]
            concurrent = await asyncio.gather(
                *(client.emit(act="PUT", kind="x.e2e.sample", body={"i": i}, thread="c13.par") for i in range(50))
            )
            return sequential, list(concurrent)

    sequential, concurrent = run(scenario)
    for results, thread in ((sequential, "c13.seq"), (concurrent, "c13.par")):
        assert all(r.success and r.retried == 0 for r in results), [r.error for r in results if not r.success]
        clocks = [r.clock for r in results]
        assert all(isinstance(c, int) and c >= 1.6e12 for c in clocks)
        assert len(set(clocks)) == 50
        stored = listing(node, thread)
        assert len(stored) == 50
        assert sorted(r["clock"] for r in stored) == sorted(clocks)
    assert [r.clock for r in sequential] == sorted(r.clock for r in sequential)
    assert len({r.clock for r in sequential}) == 50


def test_14_lower_explicit_clock_after_auto_clock_is_accepted(node: DaemonProcess) -> None:
    async def scenario() -> tuple[EmitResult, EmitResult]:
        async with sdk(node.url) as client:
            auto = await client.intend("c14 goal", thread="c14.t")
            low = await client.fulfill("c14.t", "done", fulfills=auto.record_id, clock=1)
            return auto, low

    auto, low = run(scenario)
    assert ok(auto).clock is not None and auto.clock > 1.6e12
    assert ok(low).clock == 1
    assert [r["clock"] for r in listing(node, "c14.t")] == [auto.clock, 1]


def test_15_arbitrary_threads_and_dids_are_accepted(node: DaemonProcess) -> None:
    threads = ["music.library", "th_test", "th_" + "5e" * 32, "c15.with:colon@and-dash_x"]
    dids = ["did:test:me", "did:example:x", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"]

    async def scenario() -> list[tuple[str, str, EmitResult]]:
        out = []
        for did in dids:
            async with sdk(node.url, actor=did) as client:
                for thread in threads:
                    result = await client.emit(act="PUT", kind="x.e2e.sample", body={"c": 15}, thread=thread)
                    out.append((did, thread, result))
        return out

    for did, thread, result in run(scenario):
        assert ok(result)
        stored = httpx.get(f"{node.url}/v1/records/{result.record_id}", timeout=10.0).json()
        assert stored["actor"] == did and stored["thread"] == thread


@pytest.mark.parametrize(
    "change",
    [
        {"body": ["not", "an", "object"]},
        {"body": "text"},
        {"clock": -1},
        {"clock": 1.5},
        {"clock": "12"},
        {"act": "SHOUT"},
        {"act": "put"},
        {"data_type": "INTEGER"},
        {"actor": ""},
        {"thread": ""},
    ],
    ids=lambda change: json.dumps(change),
)
def test_16_invalid_envelopes_are_4xx_json(node: DaemonProcess, change: dict[str, Any]) -> None:
    assert_error(post(node, {**envelope("c16.t", 1), **change}))


def test_16_sdk_reports_invalid_envelopes_without_retrying(node: DaemonProcess) -> None:
    async def scenario() -> list[EmitResult]:
        async with sdk(node.url) as client:
            return [
                await client.emit(act="SHOUT", kind="x.e2e.sample", body={}, thread="c16.sdk"),
                await client.emit(act="PUT", kind="x.e2e.sample", body={}, thread="c16.sdk", data_type="INTEGER"),
                await client.emit(act="PUT", kind="x.e2e.sample", body={}, thread="c16.sdk", clock=-1),
            ]

    for result in run(scenario):
        assert result.success is False and result.retried == 0
        assert result.error is not None and result.error.startswith("HTTP 400"), result.error
    assert listing(node, "c16.sdk") == []


def test_17_namespaces(node: DaemonProcess) -> None:
    body = assert_error(post(node, envelope("c17.t", 1, body={"namespace": "ghost17"})), 403, "NAMESPACE_REJECTED")
    assert "ghost17" in body["message"] and "spl namespace create ghost17" in body["message"]
    created = httpx.post(f"{node.url}/v1/namespaces", json={"id": "acme17"}, timeout=10.0)
    assert created.status_code == 201, created.text

    async def scenario() -> tuple[EmitResult, EmitResult, EmitResult, EmitResult]:
        async with sdk(node.url) as client:
            ghost = await client.emit(act="PUT", kind="x.e2e.sample", body={"namespace": "ghost17"}, thread="c17.t")
            nested = await client.emit(act="PUT", kind="x.e2e.sample", body={"namespace": "acme17/ops"}, thread="c17.t")
            registered = await client.emit(act="PUT", kind="x.e2e.sample", body={"namespace": "acme17"}, thread="c17.t")
            plain = await client.emit(act="PUT", kind="x.e2e.sample", body={}, thread="c17.t")
            return ghost, nested, registered, plain

    ghost, nested, registered, plain = run(scenario)
    for refused in (ghost, nested):
        assert refused.success is False and refused.retried == 0
        assert refused.error is not None and refused.error.startswith("HTTP 403")
        assert "NAMESPACE_REJECTED" in refused.error
    # (the SDK keeps only 200 characters of the body; the full message names the fix)
    nested_raw = assert_error(post(node, envelope("c17.t", 9, body={"namespace": "acme17/ops"})), 403)
    assert "'acme17/ops'" in nested_raw["message"] and "spl namespace create acme17/ops" in nested_raw["message"]
    stored = {r["id"]: r for r in listing(node, "c17.t")}
    assert stored[ok(registered).record_id]["namespace"] == "acme17"
    assert stored[ok(plain).record_id]["namespace"] == "default"
    assert len(stored) == 2


def test_18_server_errors_are_retried(node: DaemonProcess) -> None:
    async def scenario() -> tuple[EmitResult, EmitResult, list[tuple[str, str]]]:
        async with FaultProxy(node.url) as proxy, sdk(proxy.url) as client:
            proxy.fail_next(2)
            recovered = await client.emit(act="PUT", kind="x.e2e.sample", body={"n": 1}, thread="c18.t", clock=1)
            proxy.fail_next(3)
            failed = await client.emit(act="PUT", kind="x.e2e.sample", body={"n": 2}, thread="c18.t", clock=2)
            return recovered, failed, list(proxy.seen)

    recovered, failed, seen = run(scenario)
    assert recovered.success is True and recovered.retried == 2
    assert failed.success is False and failed.retried == 2
    assert failed.error is not None and failed.error.startswith("HTTP 503:")
    assert seen.count(("POST", "/v1/records")) == 6
    assert [r["id"] for r in listing(node, "c18.t")] == [recovered.record_id]


def test_19_emit_sync_matches_emit(node: DaemonProcess) -> None:
    async def scenario() -> dict[str, EmitResult]:
        async with FaultProxy(node.url) as proxy, sdk(proxy.url) as client:
            out = {
                "sync": await asyncio.to_thread(
                    client.emit_sync, act="PUT", kind="x.e2e.sample", body={"v": 1}, thread="c19.t", clock=1
                ),
                "async": await client.emit(act="PUT", kind="x.e2e.sample", body={"v": 1}, thread="c19.t", clock=1),
                "sync_dup": await asyncio.to_thread(
                    client.emit_sync, act="PUT", kind="x.e2e.sample", body={"v": 2}, thread="c19.t", clock=1
                ),
                "async_dup": await client.emit(act="PUT", kind="x.e2e.sample", body={"v": 2}, thread="c19.t", clock=1),
            }
            proxy.fail_next(2)
            out["sync_retry"] = await asyncio.to_thread(
                client.emit_sync, act="PUT", kind="x.e2e.sample", body={"v": 3}, thread="c19.t", clock=3
            )
            proxy.fail_next(3)
            out["sync_fail"] = await asyncio.to_thread(
                client.emit_sync, act="PUT", kind="x.e2e.sample", body={"v": 4}, thread="c19.t", clock=4
            )
            return out

    out = run(scenario)
    assert ok(out["sync"]).record_id == ok(out["async"]).record_id
    for name in ("sync_dup", "async_dup"):
        result = out[name]
        assert result.success is False and result.retried == 0
        assert result.error is not None and result.error.startswith("HTTP 409") and "DuplicateClock" in result.error
    assert out["sync_dup"].error == out["async_dup"].error
    assert ok(out["sync_retry"]).retried == 2
    assert out["sync_fail"].success is False and out["sync_fail"].retried == 2
    assert out["sync_fail"].error is not None and out["sync_fail"].error.startswith("HTTP 503:")
    assert len(listing(node, "c19.t")) == 2


def test_20_parents_round_trip(node: DaemonProcess) -> None:
    async def scenario() -> tuple[str, str, EmitResult]:
        async with sdk(node.url) as client:
            a = await emit_one(client, "c20.t", n="a")
            b = await emit_one(client, "c20.t", n="b")
            child = await client.emit(
                act="KNOW", kind="x.e2e.sample", body={"n": "child"}, thread="c20.t", parents=[max(a, b), min(a, b)]
            )
            return a, b, child

    a, b, child = run(scenario)
    stored = httpx.get(f"{node.url}/v1/records/{ok(child).record_id}", timeout=10.0).json()
    assert stored["parents"] == sorted([a, b])
    assert stored["id"] == sdk_id(stored)
    assert listing(node, "c20.t")[-1]["parents"] == sorted([a, b])


def test_21_reserved_kind_helpers(node: DaemonProcess) -> None:
    thread = "c21.t"

    async def scenario() -> dict[str, EmitResult]:
        async with sdk(node.url) as client:
            target = await emit_one(client, thread, title="original")
            return {
                "core.correction": await client.emit_correction(
                    corrects=[target], revised_fields={"title": "fixed"}, reason="typo", thread=thread
                ),
                "core.erasure": await client.emit_erasure(erases=[target], reason="gdpr", thread=thread),
                "core.alias": await client.emit_alias(
                    old_kind="music.catalog.track", new_kind="music.catalog.song", reason="rename", thread=thread
                ),
                "core.scope_transfer": await client.emit_scope_transfer(
                    scope="music",
                    from_publisher="did:test:old",
                    to_publisher="did:test:new",
                    reason="sold",
                    thread=thread,
                ),
                "core.scope_claim": await client.emit_scope_claim(
                    scope="music", governance_policy={"type": "maintainer_approval"}, thread=thread
                ),
            }

    expected_keys = {
        "core.correction": {"corrects", "revised_fields", "reason", "correcting_actor"},
        "core.erasure": {"erases", "reason", "authorized_by", "effective_at"},
        "core.alias": {"old_kind", "new_kind", "reason", "since", "publisher_did"},
        "core.scope_transfer": {"scope", "from_publisher", "to_publisher", "reason", "effective_at"},
        "core.scope_claim": {"scope", "claimant", "governance_policy", "effective_at"},
    }
    for kind, result in run(scenario).items():
        stored = httpx.get(f"{node.url}/v1/records/{ok(result).record_id}", timeout=10.0).json()
        assert stored["act"] == "PUT"
        assert set(stored["body"]) == expected_keys[kind] | {"kind", "_v"}, kind
        assert stored["body"]["kind"] == kind and stored["body"]["_v"] == 1


# -- intend / fulfill (items 22-24) --------------------------------------------------------


def _intend_and_fulfill(node: DaemonProcess) -> tuple[EmitResult, EmitResult, EmitResult, list[dict[str, Any]]]:
    async def scenario() -> tuple[EmitResult, EmitResult, EmitResult, list[dict[str, Any]]]:
        async with sdk(node.url) as client:
            intent = await client.intend("ship the release")
            assert intent.record_id is not None
            single = await client.fulfill(intent.thread, "done", fulfills=intent.record_id)
            many = await client.fulfill(intent.thread, "all done", fulfills=[intent.record_id, "f" * 64])
            return intent, single, many, await client.query_thread(intent.thread)

    return run(scenario)


def test_22_intend_opens_a_fresh_thread(node: DaemonProcess) -> None:
    intent, _, _, records = _intend_and_fulfill(node)
    assert ok(intent).act == "INTEND" and intent.kind == "core.intent"
    assert re.fullmatch(r"th_[0-9a-f]{64}", intent.thread)
    assert records[0]["body"] == {"goal": "ship the release", "kind": "core.intent", "_v": 1}
    assert records[0]["act"] == "INTEND"


def test_23_fulfill_stores_a_know(node: DaemonProcess) -> None:
    intent, single, many, records = _intend_and_fulfill(node)
    by_id = {r["id"]: r for r in records}
    one = by_id[ok(single).record_id]
    assert one["act"] == "KNOW"
    assert one["body"] == {"summary": "done", "fulfills": intent.record_id, "kind": "core.outcome", "_v": 1}
    both = by_id[ok(many).record_id]
    assert both["body"]["fulfills"] == [intent.record_id, "f" * 64]


def test_24_query_thread_returns_ingest_order(node: DaemonProcess) -> None:
    intent, single, many, records = _intend_and_fulfill(node)
    assert [r["id"] for r in records] == [intent.record_id, single.record_id, many.record_id]
    for record in records:
        for key in RECORD_FIELDS:
            assert key in record, key
    sequences = [r["sequence"] for r in records]
    assert sequences == sorted(sequences)


# -- Query (items 25-31) ------------------------------------------------------------------


def test_25_thread_listing_shape(node: DaemonProcess) -> None:
    assert post(node, envelope("c25.t", 1)).status_code == 201
    response = httpx.get(f"{node.url}/v1/threads/c25.t/records", timeout=10.0)
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list" and len(payload["data"]) == 1
    empty = httpx.get(f"{node.url}/v1/threads/c25.nobody-wrote-here/records", timeout=10.0)
    assert empty.status_code == 200 and empty.json() == {"object": "list", "data": []}

    async def scenario() -> list[dict[str, Any]]:
        async with sdk(node.url) as client:
            return await client.query_thread("c25.nobody-wrote-here")

    assert run(scenario) == []


def _thread_with_clocks(node: DaemonProcess, thread: str, clocks: list[int], actor: str = ME) -> list[str]:
    ids = []
    for clock in clocks:
        response = post(node, envelope(thread, clock, actor=actor, body={"kind": "x.e2e.sample", "_v": 1, "c": clock}))
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_26_query_thread_honours_limit(node: DaemonProcess) -> None:
    ids = _thread_with_clocks(node, "c26.t", [1, 2, 3, 4, 5])

    async def scenario() -> list[dict[str, Any]]:
        async with sdk(node.url) as client:
            return await client.query_thread("c26.t", limit=2)

    assert [r["id"] for r in run(scenario)] == ids[:2]


def test_27_since_is_exclusive_on_clock(node: DaemonProcess) -> None:
    ids = _thread_with_clocks(node, "c27.t", [40, 10, 30, 20])  # ingest order differs from clock order

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with sdk(node.url) as client:
            return await client.query_thread("c27.t", since=20), await client.query(thread="c27.t", since=20)

    by_thread, by_query = run(scenario)
    # clock > 20, in ingest (sequence) order
    assert [r["id"] for r in by_thread] == [ids[0], ids[2]]
    assert [r["id"] for r in by_query] == [ids[0], ids[2]]


def test_28_query_by_thread_and_actor(node: DaemonProcess) -> None:
    alice, bob = "did:test:c28-alice", "did:test:c28-bob"
    a_ids = _thread_with_clocks(node, "c28.t", [1, 2], actor=alice)
    b_ids = _thread_with_clocks(node, "c28.t", [1, 2], actor=bob)
    elsewhere = _thread_with_clocks(node, "c28.other", [1], actor=alice)

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        async with sdk(node.url) as client:
            return {
                "thread": await client.query(thread="c28.t"),
                "query_thread": await client.query_thread("c28.t"),
                "actor": await client.query(actor=alice),
                "both": await client.query(thread="c28.t", actor=bob),
            }

    out = run(scenario)
    assert [r["id"] for r in out["thread"]] == [r["id"] for r in out["query_thread"]] == a_ids + b_ids
    assert [r["id"] for r in out["actor"]] == a_ids + elsewhere
    assert [r["id"] for r in out["both"]] == b_ids


def test_29_query_by_kind_alone(daemon: DaemonProcess) -> None:
    # A fresh daemon: the unfiltered GET /v1/records?limit=100 the SDK sends sees every record.
    async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
        async with sdk(daemon.url) as client:
            tracks = []
            for title in ("Glow", "Fade"):
                result = await client.emit(
                    act="PUT", kind="music.catalog.track", body={"title": title}, thread="c29.music"
                )
                tracks.append(ok(result).record_id)
            await client.emit(act="PUT", kind="music.catalog.album", body={"title": "LP"}, thread="c29.music")
            await client.emit(act="PUT", kind="music.catalog.track", body={"title": "Elsewhere"}, thread="c29.b")
            return tracks, await client.query(kind="music.catalog.track")

    tracks, found = run(scenario)
    raw = httpx.get(f"{daemon.url}/v1/records?limit=100", timeout=10.0)
    assert raw.status_code == 200
    # Besides the four emitted here, a fresh home holds only the genesis records of its reserved threads.
    listed = raw.json()["data"]
    assert len([r for r in listed if r["thread"].startswith("c29.")]) == 4
    assert all(r["body"].get("kind") == GENESIS_KIND for r in listed if not r["thread"].startswith("c29."))
    assert [r["body"]["title"] for r in found] == ["Glow", "Fade", "Elsewhere"]
    assert [r["id"] for r in found][:2] == tracks


def test_30_where_filters_full_bodies(node: DaemonProcess) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with sdk(node.url) as client:
            for title in ("Glow", "Fade", "Glow"):
                ok(await client.emit(act="PUT", kind="music.catalog.track", body={"title": title}, thread="c30.t"))
            return await client.query(thread="c30.t", where={"body.title": "Glow"})

    found = run(scenario)
    assert len(found) == 2 and all(r["body"]["title"] == "Glow" for r in found)


def test_31_list_errors_become_empty_lists(node: DaemonProcess) -> None:
    assert post(node, envelope("c31.t", 1)).status_code == 201

    async def scenario() -> dict[str, Any]:
        async with FaultProxy(node.url) as proxy, sdk(proxy.url) as client:
            out: dict[str, Any] = {
                "bad_thread": await client.query_thread("c31 has spaces"),  # 400 from the daemon
                "bad_limit": await client.query(thread="c31.t", limit=0),  # 400 from the daemon
            }
            proxy.fail_next(1, method="GET", path="/v1/threads/c31.t/records", status=503)
            out["thread_503"] = await client.query_thread("c31.t")
            proxy.fail_next(1, method="GET", path="/v1/records", status=500)
            out["query_500"] = await client.query(thread="c31.t")
            out["after"] = await client.query_thread("c31.t")
            return out

    out = run(scenario)
    assert out["bad_thread"] == [] and out["bad_limit"] == []
    assert out["thread_503"] == [] and out["query_500"] == []
    assert len(out["after"]) == 1  # the daemon itself answered fine: the [] came from the errors
    # Error answers from the daemon are JSON, never HTML or empty.
    assert_error(httpx.get(f"{node.url}/v1/threads/c31%20x/records", timeout=10.0), 400, "INVALID_THREAD")
    assert_error(httpx.get(f"{node.url}/v1/records?limit=0", timeout=10.0), 400)


# -- Subscribe / SSE (items 34-46) ---------------------------------------------------------


def test_34_watch_answers_at_once_even_for_an_empty_thread(node: DaemonProcess) -> None:
    async def scenario() -> tuple[int, str, str, float, int]:
        async with httpx.AsyncClient(timeout=10.0) as http:
            started = time.monotonic()
            async with http.stream("GET", f"{node.url}/v1/threads/c34.empty/watch") as response:
                elapsed = time.monotonic() - started
                status = response.status_code
                content_type = response.headers.get("content-type", "")
                cache = response.headers.get("cache-control", "")
        async with sdk(node.url) as client:
            subscriber = Subscriber().start(client, "c34.never-written")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            subscriber.sub.close()
            await subscriber.sub.wait_closed(5.0)
            return status, content_type, cache, elapsed, len(subscriber.errors)

    status, content_type, cache, elapsed, errors = run(scenario)
    assert status == 200
    assert content_type.startswith("text/event-stream")
    assert cache == "no-cache"
    assert elapsed < 2.0
    assert errors == 0


def test_35_live_record_is_delivered_once_and_whole(node: DaemonProcess) -> None:
    async def scenario() -> tuple[Subscriber, float, str, str, list[dict[str, Any]]]:
        async with sdk(node.url) as client:
            subscriber = Subscriber().start(client, "c35.t")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            emitted_at = time.monotonic()
            first = await emit_one(client, "c35.t", n=1)
            await subscriber.wait_ids([first], within=5.0)
            latency = subscriber.records.times[0] - emitted_at
            second = await emit_one(client, "c35.t", n=2)  # a later record proves nothing else was pending
            await subscriber.wait_ids([second], within=5.0)
            return subscriber, latency, first, second, await client.query_thread("c35.t")

    subscriber, latency, first, second, stored = run(scenario)
    assert latency < 1.0
    assert subscriber.ids() == [first, second]
    assert subscriber.records.items == stored  # equal to the stored records, ids included
    assert subscriber.errors.items == []


def test_36_other_threads_are_not_delivered(node: DaemonProcess) -> None:
    async def scenario() -> tuple[list[str], str]:
        async with sdk(node.url) as client:
            subscriber = Subscriber().start(client, "c36.mine")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            for n in range(3):
                await emit_one(client, "c36.other", n=n)
                await emit_one(client, "c36.mine-not", n=n)
            mine = await emit_one(client, "c36.mine", n=99)
            await subscriber.wait_ids([mine])
            return subscriber.ids(), mine

    delivered, mine = run(scenario)
    assert delivered == [mine]


async def _read_frames(response: httpx.Response, stop: Any) -> tuple[bytes, list[dict[str, Any]]]:
    """Raw SSE bytes and parsed frames (fields as lists) until ``stop(frames)`` is true."""
    raw, frames, pending = b"", [], b""
    async for chunk in response.aiter_raw():
        raw += chunk
        pending += chunk
        while b"\n\n" in pending:
            text, pending = pending.split(b"\n\n", 1)
            frame: dict[str, Any] = {"lines": text.decode("ascii").split("\n")}
            for line in frame["lines"]:
                name, _, value = line.partition(": ")
                frame.setdefault(name, []).append(value)
            frames.append(frame)
        if stop(frames):
            break
    return raw, frames


def test_37_frames_are_ascii_json_with_sequence_ids(node: DaemonProcess) -> None:
    text = "line\u2028sep\u2029para 🎵 Zoë \u0007 tab\t nl\n end"

    async def scenario() -> tuple[bytes, list[dict[str, Any]], Subscriber, str]:
        async with sdk(node.url) as client:
            subscriber = Subscriber().start(client, "c37.t")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            rid = await emit_one(client, "c37.t", text=text)
            await subscriber.wait_ids([rid])
            async with (
                httpx.AsyncClient(timeout=10.0) as http,
                http.stream("GET", f"{node.url}/v1/threads/c37.t/watch", headers={"last-event-id": "0"}) as response,
            ):
                raw, frames = await _read_frames(
                    response, lambda frames: any(f.get("event") == ["record.created"] for f in frames)
                )
            return raw, frames, subscriber, rid

    raw, frames, subscriber, rid = run(scenario)
    assert all(byte < 0x80 for byte in raw), "SSE bytes must be ASCII-only"
    frame = next(f for f in frames if f.get("event") == ["record.created"])
    assert frame["lines"][0] == "event: record.created"
    assert len(frame["id"]) == 1 and frame["id"][0].isdigit()
    assert len(frame["data"]) == 1
    data = json.loads(frame["data"][0])
    assert set(data) == {"id", "record"} and data["id"] == rid == data["record"]["id"]
    assert data["record"]["sequence"] == int(frame["id"][0])
    assert data["record"]["body"]["text"] == text
    # ... and the SDK, which splits lines on U+2028 too, got the body intact.
    (delivered,) = subscriber.records.items
    assert delivered["body"]["text"] == text


def test_38_heartbeats(node: DaemonProcess, secure_node: DaemonProcess) -> None:
    async def scenario() -> tuple[Subscriber, Any, str, str | None, list[dict[str, Any]]]:
        async with sdk(node.url) as client:
            subscriber = Subscriber().start(client, "c38.t")
            await subscriber.heartbeats.wait_for_count(3, 10.0, "heartbeats")
            cursor_before = subscriber.sub.cursor
            rid = await emit_one(client, "c38.t", n=1)
            await subscriber.wait_ids([rid])
            seen = len(subscriber.heartbeats)
            await subscriber.heartbeats.wait_for_count(seen + 2, 10.0, "heartbeats after a record")
            cursor_after = subscriber.sub.cursor
            async with (
                httpx.AsyncClient(timeout=10.0) as http,
                http.stream("GET", f"{node.url}/v1/threads/c38.idle/watch") as response,
            ):
                _, frames = await _read_frames(
                    response, lambda frames: any(f.get("event") == ["heartbeat"] for f in frames)
                )
            return subscriber, cursor_before, rid, cursor_after, frames

    subscriber, cursor_before, rid, cursor_after, frames = run(scenario)
    gaps = [b - a for a, b in zip(subscriber.heartbeats.times, subscriber.heartbeats.times[1:], strict=False)]
    assert gaps and max(gaps) < 5.0  # configured 0.5 s; the spec's bound is < 60 s
    assert cursor_before is None  # heartbeats carry no id
    stored = httpx.get(f"{node.url}/v1/records/{rid}", timeout=10.0).json()
    assert cursor_after == str(stored["sequence"])  # still the record cursor after more heartbeats
    heartbeat = next(f for f in frames if f.get("event") == ["heartbeat"])
    assert "id" not in heartbeat and len(heartbeat.get("data", [])) == 1
    assert isinstance(json.loads(heartbeat["data"][0]), dict)
    assert subscriber.errors.items == []
    # The default interval (15 s) is below the SDK's 60 s watchdog.
    assert secure_node.home.load_config().heartbeat_seconds < 60


def test_39_since_clock_replays_then_goes_live(node: DaemonProcess) -> None:
    ids = _thread_with_clocks(node, "c39.t", [1, 2, 3, 4, 5])

    async def scenario() -> tuple[Subscriber, StreamGate, list[str], dict[str, int]]:
        async with StreamGate(node.port) as gate, sdk(gate.url) as watcher, sdk(node.url) as writer:
            subscriber = Subscriber().start(watcher, "c39.t", since_clock=2)
            await subscriber.wait_ids(ids[2:])
            live = await writer.emit(act="PUT", kind="x.e2e.sample", body={"c": 6}, thread="c39.t", clock=6)
            await subscriber.wait_ids([ok(live).record_id])
            await gate.drop_all()
            await gate.requests.wait_for_count(2, 10.0, "a reconnect")
            later = await writer.emit(act="PUT", kind="x.e2e.sample", body={"c": 7}, thread="c39.t", clock=7)
            await subscriber.wait_ids([ok(later).record_id])
            sequences = {r["id"]: r["sequence"] for r in await writer.query_thread("c39.t")}
            return subscriber, gate, [live.record_id, later.record_id], sequences

    subscriber, gate, new_ids, sequences = run(scenario)
    assert subscriber.ids() == ids[2:] + new_ids  # clock > 2, in order, then live, no duplicates
    first, second = gate.requests.items[0], gate.requests.items[1]
    assert first.target == "/v1/threads/c39.t/watch?since_clock=2"
    assert "last-event-id" not in first.headers
    assert second.target == "/v1/threads/c39.t/watch"  # since_clock only on the first connection
    assert second.headers["last-event-id"] == str(sequences[new_ids[0]])
    assert "transport_error" in subscriber.reasons()


def test_40_resume_after_a_graceful_restart(daemon_factory: type[DaemonProcess]) -> None:
    process = daemon_factory("c40")
    process.start(port=0)
    port = process.port

    async def scenario() -> tuple[Subscriber, StreamGate, list[str], str, float]:
        async with StreamGate(process.port) as gate, sdk(gate.url) as watcher, sdk(process.url) as writer:
            subscriber = Subscriber().start(watcher, "c40.t")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            before = [await emit_one(writer, "c40.t", n=n) for n in range(3)]
            await subscriber.wait_ids(before)
            cursor = subscriber.sub.cursor
            assert await asyncio.to_thread(process.stop) == 0
            await subscriber.errors.wait_until(
                lambda errors: any(e.reason == "server_shutdown" for e in errors), 10.0, "server_shutdown"
            )
            gate.open = False  # keep the subscriber away until records exist that only a replay can bring
            await asyncio.to_thread(process.start)
            assert process.port == port
            restarted = [await emit_one(writer, "c40.t", n=n) for n in range(3, 6)]
            reopened_at = time.monotonic()
            gate.open = True
            await subscriber.wait_ids(restarted)
            live = [await emit_one(writer, "c40.t", n=n) for n in range(6, 8)]
            await subscriber.wait_ids(live)
            return subscriber, gate, before + restarted + live, cursor, reopened_at

    subscriber, gate, expected, cursor, reopened_at = run(scenario)
    assert subscriber.ids() == expected  # every record after the cursor exactly once, in order
    resumed = [r for r in gate.requests.items if r.at >= reopened_at]
    assert resumed, "the subscriber never came back"
    assert resumed[0].headers.get("last-event-id") == cursor
    assert len(subscriber.opens) >= 2


def test_41_server_shutdown_reconnects_after_retry_after(daemon_factory: type[DaemonProcess]) -> None:
    process = daemon_factory("c41")
    process.start(port=0)

    async def scenario() -> tuple[Subscriber, StreamGate, float, str]:
        async with StreamGate(process.port) as gate, sdk(gate.url) as watcher, sdk(process.url) as writer:
            subscriber = Subscriber().start(watcher, "c41.t", reconnect_max_s=5.0)
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            first = await emit_one(writer, "c41.t", n=1)
            await subscriber.wait_ids([first])
            attempts_before = len(gate.attempts)
            assert await asyncio.to_thread(process.stop) == 0
            await subscriber.errors.wait_until(
                lambda errors: any(e.reason == "server_shutdown" for e in errors), 10.0, "server_shutdown"
            )
            shutdown_index = subscriber.reasons().index("server_shutdown")
            shutdown_at = subscriber.errors.times[shutdown_index]
            await gate.attempts.wait_for_count(attempts_before + 1, 5.0, "a reconnect attempt")
            await asyncio.to_thread(process.start)
            await subscriber.opens.wait_for_count(2, 15.0, "on_open after the restart")
            second = await emit_one(writer, "c41.t", n=2)
            await subscriber.wait_ids([second])
            reconnect_delay = gate.attempts.times[attempts_before] - shutdown_at
            return subscriber, gate, reconnect_delay, second

    subscriber, gate, reconnect_delay, second = run(scenario)
    shutdown = next(e for e in subscriber.errors.items if e.reason == "server_shutdown")
    assert isinstance(shutdown, SubscribeError)
    assert shutdown.next_retry_s == pytest.approx(0.2)  # retry_after_ms: 200
    assert 0.15 <= reconnect_delay < 1.5
    assert subscriber.ids()[-1] == second and len(subscriber.ids()) == len(set(subscriber.ids())) == 2


def test_42_lagged_subscriber_resumes_without_loss(daemon_factory: type[DaemonProcess]) -> None:
    process = configure(daemon_factory("c42"), sse_buffer=1)
    process.start(port=0)

    async def scenario() -> tuple[Subscriber, list[str]]:
        async with sdk(process.url) as watcher, sdk(process.url) as writer:
            subscriber = Subscriber().start(watcher, "c42.t")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            emitted: list[str] = []
            for burst in range(20):
                results = await asyncio.gather(
                    *(
                        writer.emit(act="PUT", kind="x.e2e.sample", body={"b": burst, "i": i}, thread="c42.t")
                        for i in range(30)
                    )
                )
                emitted += [ok(r).record_id for r in results]
                if "lagged" in subscriber.reasons():
                    break
            await subscriber.wait_ids(emitted, within=20.0)
            stored = await writer.query_thread("c42.t", limit=10_000)
            return subscriber, [r["id"] for r in stored]

    subscriber, stored = run(scenario)
    assert "lagged" in subscriber.reasons(), "the daemon never reported a lagged subscriber"
    assert subscriber.ids() == stored  # all of them, once each, in sequence order
    assert len(subscriber.opens) >= 2


def test_43_stream_cut_without_sentinel_loses_nothing(node: DaemonProcess) -> None:
    async def scenario() -> tuple[Subscriber, list[str]]:
        async with StreamGate(node.port) as gate, sdk(gate.url) as watcher, sdk(node.url) as writer:
            subscriber = Subscriber().start(watcher, "c43.t")
            await subscriber.opens.wait_for_count(1, 5.0, "on_open")
            ids = [await emit_one(writer, "c43.t", n=0)]
            await subscriber.wait_ids(ids)
            gate.open = False
            await gate.drop_all()
            await subscriber.errors.wait_for_count(1, 5.0, "a transport error")
            ids += [await emit_one(writer, "c43.t", n=n) for n in (1, 2)]  # committed while disconnected
            refused = len(gate.attempts)
            await gate.attempts.wait_for_count(refused + 1, 5.0, "a refused reconnect")
            gate.open = True
            await subscriber.wait_ids(ids)
            ids.append(await emit_one(writer, "c43.t", n=3))
            await subscriber.wait_ids(ids)
            return subscriber, ids

    subscriber, ids = run(scenario)
    assert subscriber.ids() == ids
    assert set(subscriber.reasons()) == {"transport_error"}


@pytest.mark.parametrize(
    "cursor",
    [b"garbage", b"-3", b"1.5", b"", b"\xb2", b"9" * 19, b"9" * 25, b"12abc"],
    ids=["word", "negative", "float", "empty", "latin1-superscript", "above-i64", "huge", "mixed"],
)
def test_44_garbage_last_event_id_replays_from_the_start(node: DaemonProcess, cursor: bytes) -> None:
    thread = "c44.t"
    if not listing(node, thread):
        _thread_with_clocks(node, thread, [1, 2])
    first_two = [r["id"] for r in listing(node, thread)][:2]

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        async with (
            httpx.AsyncClient(timeout=10.0) as http,
            http.stream("GET", f"{node.url}/v1/threads/{thread}/watch", headers={"last-event-id": cursor}) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                return response.status_code, []
            _, frames = await _read_frames(
                response, lambda frames: sum(f.get("event") == ["record.created"] for f in frames) >= 2
            )
            return response.status_code, frames

    status, frames = run(scenario, timeout=15.0)
    assert status == 200
    replayed = [json.loads(f["data"][0])["id"] for f in frames if f.get("event") == ["record.created"]]
    assert replayed[:2] == first_two


def test_45_close_is_prompt_and_tolerated(node: DaemonProcess) -> None:
    async def scenario() -> tuple[float, float, str]:
        client = sdk(node.url)
        subscriber = Subscriber().start(client, "c45.t")
        other = Subscriber().start(client, "c45.u")
        await subscriber.opens.wait_for_count(1, 5.0, "on_open")
        await other.opens.wait_for_count(1, 5.0, "on_open")
        started = time.monotonic()
        subscriber.sub.close()
        subscriber.sub.close()  # idempotent
        await subscriber.sub.wait_closed(6.0)
        sub_close = time.monotonic() - started
        assert subscriber.sub.closed
        started = time.monotonic()
        await client.close()  # still has the other live subscription
        client_close = time.monotonic() - started
        assert other.sub.closed
        async with sdk(node.url) as again:
            fresh = Subscriber().start(again, "c45.t")
            await fresh.opens.wait_for_count(1, 5.0, "on_open")
            rid = await emit_one(again, "c45.t", n=1)
            await fresh.wait_ids([rid])
            assert (await again.health())["status"] == "ok"
        return sub_close, client_close, rid

    sub_close, client_close, _ = run(scenario)
    assert sub_close < 6.0 and client_close < 6.0


def test_46_watch_with_auth(secure_node: DaemonProcess, tokens: dict[str, str]) -> None:
    assert_error(httpx.get(f"{secure_node.url}/v1/threads/c46.t/watch", timeout=10.0), 401, "AUTH_REQUIRED")

    async def scenario() -> tuple[Subscriber, Subscriber, Subscriber, list[str]]:
        async with (
            sdk(secure_node.url, api_key=tokens["rw"]) as keyed,
            sdk(secure_node.url) as bare,
            sdk(secure_node.url) as anonymous,
        ):
            by_key = Subscriber().start(keyed, "c46.t")
            by_bearer = Subscriber().start(bare, "c46.t", bearer=tokens["ro"])
            nobody = Subscriber().start(anonymous, "c46.t")
            await by_key.opens.wait_for_count(1, 5.0, "on_open (x-api-key)")
            await by_bearer.opens.wait_for_count(1, 5.0, "on_open (bearer)")
            rid = await emit_one(keyed, "c46.t", n=1)
            await by_key.wait_ids([rid])
            await by_bearer.wait_ids([rid])
            await nobody.errors.wait_for_count(2, 10.0, "401 errors")
            nobody.sub.close()
            return by_key, by_bearer, nobody, [rid]

    by_key, by_bearer, nobody, ids = run(scenario)
    assert by_key.ids() == by_bearer.ids() == ids
    assert nobody.records.items == [] and nobody.opens.items == []
    errors = nobody.errors.items[:2]
    assert all(e.reason == "transport_error" and e.message.startswith("HTTP 401") for e in errors)
    assert errors[1].attempt > errors[0].attempt  # backing off, not hammering


# -- Auth / errors (items 47-51) ------------------------------------------------------------


def test_47_api_key_emits_and_queries(secure_node: DaemonProcess, tokens: dict[str, str]) -> None:
    async def scenario() -> tuple[EmitResult, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with sdk(secure_node.url, api_key=tokens["rw"]) as client:
            result = await client.emit(act="PUT", kind="x.e2e.sample", body={"n": 47}, thread="c47.t")
            return result, await client.query_thread("c47.t"), await client.query(thread="c47.t"), await client.health()

    result, by_thread, by_query, health = run(scenario)
    assert ok(result).retried == 0
    assert [r["id"] for r in by_thread] == [r["id"] for r in by_query] == [result.record_id]
    assert health["status"] == "ok"
    # The x-api-key header alone authenticates (no Authorization header needed).
    response = httpx.get(
        f"{secure_node.url}/v1/threads/c47.t/records", headers={"x-api-key": tokens["rw"]}, timeout=10.0
    )
    assert response.status_code == 200 and len(response.json()["data"]) == 1


@pytest.mark.parametrize("key", [None, "not-a-token", "spl_local_sa_0000000000000000_" + "0" * 64])
def test_48_missing_or_invalid_key_is_401(secure_node: DaemonProcess, key: str | None) -> None:
    headers = {"x-api-key": key} if key else {}
    body = assert_error(post(secure_node, envelope("c48.t", 1), headers), 401, "AUTH_REQUIRED")
    if key:
        assert key not in body["message"]

    async def scenario() -> tuple[EmitResult, list[dict[str, Any]]]:
        # Separate clients: a rejected POST can wedge its pooled keep-alive connection
        # (test_bad_input.py::test_connection_is_usable_after_an_early_error, xfail).
        async with sdk(secure_node.url, api_key=key, timeout=10.0) as client:
            result = await client.emit(act="PUT", kind="x.e2e.sample", body={}, thread="c48.t")
        async with sdk(secure_node.url, api_key=key, timeout=10.0) as client:
            return result, await client.query_thread("c48.t")

    result, records = run(scenario)
    assert result.success is False and result.retried == 0
    assert result.error is not None and result.error.startswith("HTTP 401")
    assert records == []


def test_49_token_without_records_write_is_403(secure_node: DaemonProcess, tokens: dict[str, str]) -> None:
    body = assert_error(post(secure_node, envelope("c49.t", 1), {"x-api-key": tokens["ro"]}), 403, "SCOPE_FORBIDDEN")
    assert tokens["ro"] not in body["message"]

    async def scenario() -> tuple[EmitResult, int]:
        async with sdk(secure_node.url, api_key=tokens["ro"]) as client:
            result = await client.emit(act="PUT", kind="x.e2e.sample", body={}, thread="c49.t")
            async with httpx.AsyncClient(timeout=10.0) as http:  # reading is allowed with records:read
                response = await http.get(
                    f"{secure_node.url}/v1/threads/c49.t/records", headers={"x-api-key": tokens["ro"]}
                )
            return result, response.status_code

    result, read_status = run(scenario)
    assert result.success is False and result.retried == 0
    assert result.error is not None and result.error.startswith("HTTP 403") and "SCOPE_FORBIDDEN" in result.error
    assert read_status == 200


def test_50_error_bodies_are_json_envelopes(node: DaemonProcess, secure_node: DaemonProcess) -> None:
    responses = [
        post(node, {"act": "PUT"}),
        post(node, envelope("c50.t", 1, body={"namespace": "ghost50"})),
        httpx.post(f"{node.url}/v1/records", content=b"{not json", timeout=10.0),
        httpx.get(f"{node.url}/v1/records?limit=abc", timeout=10.0),
        httpx.get(f"{node.url}/v1/records/{'0' * 64}", timeout=10.0),
        httpx.get(f"{node.url}/v1/no/such/route", timeout=10.0),
        httpx.delete(f"{node.url}/v1/records", timeout=10.0),
        post(secure_node, envelope("c50.t", 1)),
    ]
    post(node, envelope("c50.dup", 1))
    responses.append(post(node, envelope("c50.dup", 1, body={"other": 1})))
    for response in responses:
        body = assert_error(response)
        assert body.get("code") or body.get("error")


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/threads/x/unknown", "/v2/records", "/v1/records/a/b"])
def test_51_unknown_routes_are_404_json(node: DaemonProcess, path: str) -> None:
    body = assert_error(httpx.get(f"{node.url}{path}", timeout=10.0), 404)
    assert path in body["message"]


# -- whole-store checks (item 6, "for any stored record") -----------------------------------


def test_06_every_stored_record_hashes_to_its_id(node: DaemonProcess) -> None:
    response = httpx.get(f"{node.url}/v1/records?limit=10000", timeout=30.0)
    assert response.status_code == 200
    records = response.json()["data"]
    assert len(records) > 100  # everything the tests above wrote
    for record in records:
        assert record["id"] == sdk_id(record), record
    sequences = [record["sequence"] for record in records]
    assert sequences == sorted(set(sequences))
