"""The discovery documents of ``/.well-known/syncropel`` (spec §8.2, §15.13).

The federation manifest is signed with Ed25519 over the canonical JSON of the manifest
*without* its ``signature`` key; it lives 7 days and is re-signed at every start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spl.core.canonical import canonical_json
from spl.core.feed import ManifestInvalid, PeerDidMismatch
from spl.core.identity import Identity, verify_signature
from spl.core.rotation import RotationInvalid, key_windows, verify_chain
from spl.core.text import printable
from spl.core.version import VERSION

__all__ = [
    "VERSION",
    "capabilities_manifest",
    "check_peer_manifest",
    "federation_manifest",
    "manifest_keys",
    "manifest_signer",
    "rfc3339",
    "signed_manifest_did",
    "verify_manifest",
    "zoned_time",
]

MANIFEST_LIFETIME = 7 * 24 * 3600


def rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def capabilities_manifest(*, auth_required: bool) -> dict[str, Any]:
    return {
        "object": "capabilities_manifest",
        "manifest_version": "1",
        "daemon": {"name": "spl", "version": VERSION, "api_version": "v1", "spec_version": "1"},
        "auth": {"required": auth_required, "headers": ["x-api-key", "authorization"]},
        "did_methods": ["did:key"],
        "record": {
            "algebra_version": "v1",
            "hashed_fields": ["parents", "thread", "actor", "act", "body", "clock", "data_type"],
            "signature": {"alg": "Ed25519", "over": "record id bytes", "encoding": "base64url"},
        },
        "transports": ["http", "sse"],
        "semantic_search": False,
        "store_backends": ["sqlite"],
        "capabilities": {
            "records": True,
            "threads": True,
            "watch": True,
            "namespaces": True,
            "tokens": True,
            "sync": True,
            "federation_consent": True,
            "federation_pairs": True,
            "reconcile_queue": False,
        },
        "conventions": {"identity_path": "/v1/identity", "sync_path": "/v1/sync"},
    }


POSTURES = {"auto": "open", "manual": "pair-then-ask", "closed": "closed"}


def federation_manifest(
    identity: Identity,
    *,
    endpoint: str,
    now: float | None = None,
    pair_approval: str = "manual",
    namespaces: Sequence[str] = ("default",),
) -> dict[str, Any]:
    """A freshly signed federation manifest for this instance.

    ``namespaces`` is what it advertises (``[sync.discovery] advertise_namespaces``): discovery lists peers by it.

    ``consent_policy`` tells an initiator what its pair request will meet (``federation.pair_approval``):
    ``open`` (accepted at once), ``pair-then-ask`` (held for the operator), ``closed`` (refused).
    """
    now = time.time() if now is None else now
    keys: Sequence[str] = getattr(identity, "keys", (identity.did,))
    statements: Sequence[dict[str, Any]] = getattr(identity, "statements", ())
    body: dict[str, Any] = {
        "object": "federation_manifest",
        "manifest_version": "1",
        "daemon": {"did": identity.did, "version": VERSION, "federation_protocol_version": "1"},
        "federation": {
            "enabled": True,
            "endpoint": endpoint,
            "pair_endpoint": f"{endpoint}/v1/federation/pair",
            "sync_change_endpoint": f"{endpoint}/v1/sync/changes",
            "sync_record_endpoint": f"{endpoint}/v1/sync/records",
        },
        "advertises": {"kinds": [], "refs": [], "namespaces": list(namespaces)},
        "consent_policy": {
            "default_posture": POSTURES.get(pair_approval, "closed"),
            "pair_approval": pair_approval,
            "accepts_pair_requests": pair_approval in ("auto", "manual"),
            "requires_did_method": ["did:key"],
            "rejects_did_method": [],
        },
        # The validity also inside the signed bytes: the signature block's copy (spec §15.13) is not signed,
        # so whoever serves an expired manifest could re-date it there.
        "validity": {"signed_at": rfc3339(now), "expires_at": rfc3339(now + MANIFEST_LIFETIME)},
        # Every key the identifier signed with (current last) and the rotation chain linking them, signed by the
        # previous key each (spl.core.rotation): a peer that pinned ``daemon.did`` verifies the current key.
        "keys": key_windows(keys, statements),
        "rotations": list(statements),
    }
    key_did = identity.key_did
    signature = identity.sign(canonical_json(body))
    body["signature"] = {
        "alg": "Ed25519",
        "key_id": f"{key_did}#key-1",
        "signature": signature,
        "signed_at": rfc3339(now),
        "expires_at": rfc3339(now + MANIFEST_LIFETIME),
    }
    return body


def manifest_keys(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The keys a manifest's ``daemon.did`` signed with, current last; RotationInvalid when its chain does not
    link that identifier to them. A manifest from before rotation existed has no chain: its DID's key only."""
    daemon = manifest.get("daemon")
    did = daemon.get("did") if isinstance(daemon, dict) else None
    if not isinstance(did, str):
        raise RotationInvalid("the manifest names no daemon.did")
    return verify_chain(did, manifest.get("rotations", []))


def manifest_signer(manifest: dict[str, Any]) -> str:
    """The key that must have signed the manifest: the current one of its chain, which ``key_id`` (when given)
    must name. RotationInvalid otherwise, saying why."""
    keys = manifest_keys(manifest)
    block = manifest.get("signature")
    key_id = block.get("key_id") if isinstance(block, dict) else None
    if key_id is not None and (not isinstance(key_id, str) or key_id.split("#", 1)[0] != keys[-1]):
        raise RotationInvalid(
            f"the manifest is signed by {printable(str(key_id), 80)}, which is not the current key of its rotation "
            f"chain ({keys[-1]}): its key was replaced without `spl identity rotate`"
        )
    return keys[-1]


def verify_manifest(manifest: dict[str, Any]) -> bool:
    """True when the manifest's signature verifies against the current key of ``daemon.did``'s rotation chain."""
    block = manifest.get("signature")
    daemon = manifest.get("daemon")
    if not isinstance(block, dict) or not isinstance(daemon, dict) or block.get("alg") != "Ed25519":
        return False
    unsigned = {key: value for key, value in manifest.items() if key != "signature"}
    signature = block.get("signature")
    if not isinstance(signature, str):
        return False
    try:
        signer = manifest_signer(manifest)
    except RotationInvalid:
        return False
    return verify_signature(signer, canonical_json(unsigned), signature)


def zoned_time(value: object) -> float | None:
    """An RFC 3339 timestamp with a zone as POSIX seconds; None when absent or malformed (a peer's text)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def signed_manifest_did(body: bytes, *, where: str, now: float, strict: bool = True) -> tuple[str, dict[str, Any]]:
    """The DID a peer's ``/.well-known/syncropel`` body proves it holds, and the manifest; ManifestInvalid otherwise.

    Accepts the envelope whose ``federation_manifest`` is the signed document (spec §8.2) or a
    bare manifest. The signature must verify against ``daemon.did`` and ``expires_at`` lie after
    ``now`` (wall-clock seconds). ``where`` names the peer in messages (escaped here). ``strict``
    False (``spl federation pair --no-strict``) accepts an expired manifest; never a bad signature.
    """
    url = printable(where, 120)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ManifestInvalid(f"{url}/.well-known/syncropel is not JSON; is it a Syncropel daemon?") from None
    manifest = payload
    if isinstance(payload, dict) and payload.get("object") != "federation_manifest":
        manifest = payload.get("federation_manifest")
    if not isinstance(manifest, dict):
        raise ManifestInvalid(f"peer at {url} publishes no federation manifest (has it a signing identity?)")
    try:
        signed = verify_manifest(manifest)
        manifest_signer(manifest)
    except RotationInvalid as exc:
        raise ManifestInvalid(
            f"peer at {url} serves a federation manifest whose signing key is not linked to its DID: {exc.message}; "
            "if it replaced its key by hand, its operator must restore the key, or both sides re-pair"
        ) from None
    except (ValueError, RecursionError):  # a DID that is not did:key, nesting too deep to canonicalise
        signed = False
    if not signed:
        raise ManifestInvalid(
            f"peer at {url} serves a federation manifest whose signature does not verify; "
            "it is not the daemon it claims to be, or its manifest was altered"
        )
    block_expiry = manifest["signature"].get("expires_at")
    validity = manifest.get("validity")
    if isinstance(validity, dict):  # signed: it wins, and the unsigned copy must agree with it
        if validity.get("expires_at") != block_expiry:
            raise ManifestInvalid(
                f"peer at {url} serves a manifest whose signature block was re-dated (its expires_at differs from "
                "the signed one); it is not the manifest the peer signed"
            )
    elif validity is not None:
        raise ManifestInvalid(f"peer at {url} serves a manifest whose validity is not an object")
    expiry = zoned_time(block_expiry)
    if expiry is None:
        raise ManifestInvalid(f"peer at {url} serves a manifest without a valid expires_at")
    if expiry <= now and strict:
        raise ManifestInvalid(
            f"peer at {url} serves a manifest that has expired; restart the peer to re-sign it "
            "(or, if its clock is wrong, pair with --no-strict)"
        )
    did: str = manifest["daemon"]["did"]  # verify_manifest checked it is a str
    return did, manifest


def check_peer_manifest(body: bytes, *, where: str, expected_did: str, now: float) -> dict[str, Any]:
    """The verified manifest, which must name ``expected_did``; ManifestInvalid or PeerDidMismatch otherwise."""
    did, manifest = signed_manifest_did(body, where=where, now=now)
    if did != expected_did:
        raise PeerDidMismatch(
            f"peer at {printable(where, 120)} is {printable(did, 120)}, not the pair's peer "
            f"{printable(expected_did, 120)}; check peer_url, or re-create the pair with the DID of the daemon "
            "at that URL"
        )
    return manifest
