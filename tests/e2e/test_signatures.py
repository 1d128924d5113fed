"""Record and manifest signatures (spec §15.12, §15.13).

Every stored record carries ``signer`` (the instance DID) and ``sig`` (Ed25519 over the
32 raw id bytes, base64url without padding); ``/.well-known/syncropel`` carries a
federation manifest signed over its canonical JSON without the ``signature`` key.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import nacl.exceptions
import nacl.signing
import pytest
from e2e_support import envelope, make_daemon, run
from syncropel import Client, Identity
from syncropel import canonical_json as sdk_canonical_json

from spl.core.identity import Identity as InstanceIdentity
from spl.core.identity import b64url_decode, public_key_from_did, verify_record_signature
from spl.core.manifest import verify_manifest
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
    response = httpx.get(f"{process.url}/v1/records?limit=10000", timeout=30.0)
    assert response.status_code == 200
    records = response.json()["data"]
    assert isinstance(records, list)
    return records


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
    assert len(records) == 11  # 4 SDK + 5 raw + the registry record + 1 namespaced (the re-post adds none)
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


def test_signature_checks_can_fail(node: DaemonProcess) -> None:
    record = next(r for r in all_records(node) if r["thread"] == "s.raw")
    rid, signer, sig = record["id"], record["signer"], record["sig"]
    assert verify_record_signature(rid, signer, sig)
    other_id = ("0" if rid[0] != "0" else "1") + rid[1:]
    assert not verify_record_signature(other_id, signer, sig)
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    assert not verify_record_signature(rid, signer, flipped)
    assert not verify_record_signature(rid, InstanceIdentity.generate().did, sig)
    assert not verify_record_signature(rid, "did:test:signer", sig)
    # The signature is over the raw id bytes, checked here without the daemon's helper.
    key = nacl.signing.VerifyKey(public_key_from_did(signer))
    key.verify(bytes.fromhex(rid), b64url_decode(sig))
    with pytest.raises(nacl.exceptions.BadSignatureError):
        key.verify(rid.encode("ascii"), b64url_decode(sig))


def test_signer_is_the_instance_did_everywhere(node: DaemonProcess) -> None:
    did = instance_did(node)
    assert did.startswith("did:key:z6Mk")
    assert len(public_key_from_did(did)) == 32
    assert httpx.get(f"{node.url}/health", timeout=10.0).json()["instance_did"] == did
    assert node.home.load_config().did == did
    assert node.home.load_identity().did == did
    assert manifest(node)["daemon"]["did"] == did


def test_federation_manifest_verifies(node: DaemonProcess) -> None:
    found = manifest(node)
    assert verify_manifest(found)
    did = instance_did(node)
    block = found["signature"]
    assert found["object"] == "federation_manifest" and found["daemon"]["did"] == did
    assert block["alg"] == "Ed25519" and block["key_id"] == f"{did}#key-1"
    assert SIG.match(block["signature"])
    signed_at = datetime.fromisoformat(block["signed_at"].replace("Z", "+00:00"))
    expires_at = datetime.fromisoformat(block["expires_at"].replace("Z", "+00:00"))
    assert expires_at - signed_at == timedelta(days=7)
    # Independently: Ed25519 over the SDK's canonical JSON of the manifest minus `signature`.
    unsigned = {key: value for key, value in found.items() if key != "signature"}
    key = nacl.signing.VerifyKey(public_key_from_did(did))
    key.verify(sdk_canonical_json(unsigned).encode("utf-8"), b64url_decode(block["signature"]))


def _tamperings() -> list[tuple[str, Any]]:
    def set_path(path: list[str], value: Any) -> Any:
        def apply(doc: dict[str, Any]) -> None:
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return apply

    return [
        ("endpoint", set_path(["federation", "endpoint"], "http://evil.example:9100")),
        ("posture", set_path(["consent_policy", "default_posture"], "open")),
        ("extra-key", set_path(["injected"], True)),
        ("dropped-key", lambda doc: doc.pop("advertises")),
        ("other-did", set_path(["daemon", "did"], InstanceIdentity.generate().did)),
        ("sig-bytes", lambda doc: doc["signature"].update(signature=doc["signature"]["signature"][::-1])),
        ("alg", set_path(["signature", "alg"], "none")),
        ("no-signature", lambda doc: doc.pop("signature")),
        ("namespaces", set_path(["advertises", "namespaces"], ["default", "secret"])),
    ]


@pytest.mark.parametrize(("name", "tamper"), _tamperings(), ids=[name for name, _ in _tamperings()])
def test_tampered_manifest_does_not_verify(node: DaemonProcess, name: str, tamper: Any) -> None:
    original = manifest(node)
    assert verify_manifest(original)
    forged = copy.deepcopy(original)
    tamper(forged)
    assert forged != original, name
    assert not verify_manifest(forged), name


def test_manifest_is_public_with_auth_on(secure_daemon: DaemonProcess) -> None:
    assert httpx.get(f"{secure_daemon.url}/v1/records", timeout=10.0).status_code == 401
    found = manifest(secure_daemon)
    assert verify_manifest(found)
    assert found["daemon"]["did"] == secure_daemon.home.load_config().did


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
