"""Record and manifest signatures (spec §15.12, §15.13).

Every stored record carries ``signer`` (the instance DID) and ``sig`` (Ed25519 over the
32 raw id bytes, base64url without padding); ``/.well-known/syncropel`` carries a
federation manifest signed over its canonical JSON without the ``signature`` key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import envelope, make_daemon, run
from syncropel import Client, Identity

from spl.core.genesis import GENESIS_THREADS, is_genesis
from spl.core.identity import verify_record_signature
from spl.core.manifest import verify_manifest
from spl.core.reserved import RESERVED_THREADS, is_reserved
from spl.daemon.launcher import DaemonProcess

SIG = re.compile(r"^[A-Za-z0-9_-]{86}$")  # 64 bytes, base64url, no padding


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("signatures") / "home")
    yield process
    process.kill()


def instance_did(process: DaemonProcess) -> str:
    response = httpx.get(f"{process.url}/v1/identity", timeout=10.0)
    assert response.status_code == 200
    did = response.json()["did"]
    assert isinstance(did, str)
    return did


def all_records(process: DaemonProcess) -> list[dict[str, Any]]:
    """Every record: the unfiltered listing (data) and each reserved thread by name (it leaves those out)."""
    response = httpx.get(f"{process.url}/v1/records?limit=10000", timeout=30.0)
    assert response.status_code == 200
    records = response.json()["data"]
    assert isinstance(records, list)
    assert not any(is_reserved(record["thread"]) for record in records)
    for thread in sorted(RESERVED_THREADS):
        named = httpx.get(f"{process.url}/v1/records", params={"thread": thread, "limit": 10000}, timeout=30.0)
        assert named.status_code == 200, named.text
        records.extend(named.json()["data"])
    return sorted(records, key=lambda record: record["sequence"])


def manifest(process: DaemonProcess, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"{process.url}/.well-known/syncropel", headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    found = response.json().get("federation_manifest")
    assert isinstance(found, dict), response.text
    return found


def _populate(process: DaemonProcess) -> None:
    """Records from every ingest path: SDK helpers, raw posts, re-posts, daemon-made records."""

    async def scenario() -> None:
        async with Client(endpoint=process.url, identity=Identity.static("did:test:signer")) as client:
            intent = await client.intend("sign everything")
            assert intent.success
            await client.fulfill(intent.thread, "signed", fulfills=intent.record_id)
            await client.emit(act="PUT", kind="x.e2e.sample", body={"text": "Zoë 🎵 \u2028"}, thread="s.sdk")
            await client.emit_alias(old_kind="a.b.c", new_kind="a.b.d", reason="rename", thread="s.sdk")

    run(scenario)
    for clock in range(1, 6):
        response = httpx.post(f"{process.url}/v1/records", json=envelope("s.raw", clock), timeout=10.0)
        assert response.status_code == 201, response.text
    again = httpx.post(f"{process.url}/v1/records", json=envelope("s.raw", 1), timeout=10.0)
    assert again.status_code == 200
    created = httpx.post(f"{process.url}/v1/namespaces", json={"id": "signed-ns"}, timeout=10.0)
    assert created.status_code == 201, created.text  # the daemon writes this registry record itself
    namespaced = envelope("s.raw", 9, body={"namespace": "signed-ns"})
    assert httpx.post(f"{process.url}/v1/records", json=namespaced, timeout=10.0).status_code == 201


def test_every_stored_record_is_signed_by_the_instance(node: DaemonProcess) -> None:
    _populate(node)
    did = instance_did(node)
    records = all_records(node)
    data = [record for record in records if not is_genesis(record["act"], record["body"])]
    assert len(data) == 11  # 4 SDK + 5 raw + the registry record + 1 namespaced (the re-post adds none)
    assert len(records) - len(data) == len(GENESIS_THREADS)  # spl init's genesis records: signed below too
    assert any(r["thread"] == "th_namespace_registry" for r in records)
    for record in records:
        assert record["signer"] == did, record
        assert SIG.match(record["sig"]), record["sig"]
        assert verify_record_signature(record["id"], record["signer"], record["sig"]), record
    # Every read path serves the same signature.
    for record in records[:5]:
        one = httpx.get(f"{node.url}/v1/records/{record['id']}", timeout=10.0).json()
        assert (one["signer"], one["sig"]) == (record["signer"], record["sig"])
    with httpx.stream(
        "GET", f"{node.url}/v1/threads/s.raw/watch", headers={"last-event-id": "0"}, timeout=10.0
    ) as response:
        raw = b""
        for chunk in response.iter_raw():
            raw += chunk
            if raw.count(b"\n\n") >= 1:
                break
    streamed = json.loads(raw.split(b"\n\n")[0].split(b"data: ", 1)[1])["record"]
    assert verify_record_signature(streamed["id"], streamed["signer"], streamed["sig"])
    assert streamed["signer"] == did


def test_signatures_and_manifest_survive_a_restart(node: DaemonProcess) -> None:
    # Last in the module: it restarts the shared daemon.
    before_records = all_records(node)
    did = instance_did(node)
    assert node.stop() == 0
    node.start()
    assert instance_did(node) == did
    after_records = all_records(node)
    assert [(r["id"], r["sig"]) for r in after_records] == [(r["id"], r["sig"]) for r in before_records]
    assert all(verify_record_signature(r["id"], r["signer"], r["sig"]) for r in after_records)
    resigned = manifest(node)
    assert verify_manifest(resigned) and resigned["daemon"]["did"] == did
    response = httpx.post(f"{node.url}/v1/records", json=envelope("s.after-restart", 1), timeout=10.0)
    assert response.status_code == 201
    record = response.json()
    assert record["signer"] == did and verify_record_signature(record["id"], did, record["sig"])
