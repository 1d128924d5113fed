"""Record and manifest signatures (spec §15.12, §15.13), in-process.

Every stored record carries ``signer`` (the instance DID) and ``sig`` (Ed25519 over the 32 raw id bytes, base64url
without padding); ``/.well-known/syncropel`` carries a federation manifest signed over its canonical JSON without
the ``signature`` key. Records from every ingest path (the SDK, SSE) and signatures across a restart are checked on
a real daemon in ``tests/e2e/test_signatures.py``.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
from e2e_support import envelope
from inprocess import InProcessDaemon
from syncropel import canonical_json as sdk_canonical_json

from spl.core.identity import Identity as InstanceIdentity
from spl.core.identity import b64url_decode, public_key_from_did, verify_record_signature
from spl.core.manifest import verify_manifest

SIG = re.compile(r"^[A-Za-z0-9_-]{86}$")  # 64 bytes, base64url, no padding


@pytest.fixture
def node(in_process_daemon: InProcessDaemon) -> InProcessDaemon:
    return in_process_daemon


async def instance_did(daemon: InProcessDaemon) -> str:
    response = await daemon.get("/v1/identity")
    assert response.status_code == 200
    did = response.json()["did"]
    assert isinstance(did, str)
    return did


async def manifest(daemon: InProcessDaemon, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await daemon.get("/.well-known/syncropel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    found = response.json().get("federation_manifest")
    assert isinstance(found, dict), response.text
    return found


async def test_signature_checks_can_fail(node: InProcessDaemon) -> None:
    response = await node.post("/v1/records", json=envelope("s.raw", 1))
    assert response.status_code == 201, response.text
    record = response.json()
    stored = (await node.get(f"/v1/records/{record['id']}")).json()
    assert (stored["signer"], stored["sig"]) == (record["signer"], record["sig"])
    assert record["signer"] == await instance_did(node) and SIG.match(record["sig"])
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


async def test_signer_is_the_instance_did_everywhere(node: InProcessDaemon) -> None:
    did = await instance_did(node)
    assert did.startswith("did:key:z6Mk")
    assert len(public_key_from_did(did)) == 32
    assert (await node.get("/health")).json()["instance_did"] == did
    assert node.home.load_config().did == did
    assert node.home.load_identity().did == did
    assert (await manifest(node))["daemon"]["did"] == did


async def test_federation_manifest_verifies(node: InProcessDaemon) -> None:
    found = await manifest(node)
    assert verify_manifest(found)
    did = await instance_did(node)
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
async def test_tampered_manifest_does_not_verify(node: InProcessDaemon, name: str, tamper: Any) -> None:
    original = await manifest(node)
    assert verify_manifest(original)
    forged = copy.deepcopy(original)
    tamper(forged)
    assert forged != original, name
    assert not verify_manifest(forged), name


async def test_manifest_is_public_with_auth_on(secure_in_process_daemon: InProcessDaemon) -> None:
    assert (await secure_in_process_daemon.get("/v1/records")).status_code == 401
    found = await manifest(secure_in_process_daemon)
    assert verify_manifest(found)
    assert found["daemon"]["did"] == secure_in_process_daemon.home.load_config().did
