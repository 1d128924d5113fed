"""did:key encoding and Ed25519 signature round trips (spec §15.12)."""

from __future__ import annotations

import pytest

from spl.core.identity import (
    Identity,
    did_from_public_key,
    public_key_from_did,
    verify_record_signature,
)


def test_did_key_round_trip_and_prefix() -> None:
    identity = Identity.generate()
    assert identity.did.startswith("did:key:z6Mk")
    assert public_key_from_did(identity.did) == identity.public_key
    assert did_from_public_key(identity.public_key) == identity.did


def test_known_did_key_decodes() -> None:
    # The did:key test vector of the W3C did:key spec (Ed25519).
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert did_from_public_key(public_key_from_did(did)) == did


def test_record_signature_round_trip() -> None:
    identity = Identity.generate()
    rid = "ab" * 32
    sig = identity.sign_record_id(rid)
    assert verify_record_signature(rid, identity.did, sig)
    assert not verify_record_signature("cd" * 32, identity.did, sig)
    assert not verify_record_signature(rid, Identity.generate().did, sig)
    tampered = sig[:10] + ("B" if sig[10] != "B" else "C") + sig[11:]
    assert not verify_record_signature(rid, identity.did, tampered)
    assert not verify_record_signature(rid, "did:sync:user:x", sig)
    assert not verify_record_signature("zz", identity.did, sig)


def test_seed_round_trip_keeps_the_did() -> None:
    identity = Identity.generate()
    assert Identity(identity.seed).did == identity.did
    assert "seed" not in repr(identity) and identity.seed.hex() not in repr(identity)


@pytest.mark.parametrize("did", ["did:key:zzzz", "did:web:x", "did:key:z0OIl", ""])
def test_bad_dids_are_refused(did: str) -> None:
    with pytest.raises(ValueError):
        public_key_from_did(did)


def test_a_signature_verifies_in_one_spelling_only() -> None:
    """base64 decoders forgive the last character's spare bits and stray characters; a record's sig must not
    verify under a second spelling (found by tests/core/test_snapshot.py's byte-flip property)."""
    identity = Identity.generate()
    record_id = "ab" * 32
    sig = identity.sign_record_id(record_id)
    assert verify_record_signature(record_id, identity.did, sig)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    same_bits = [
        alphabet[(last & ~0b1111) | spare] for spare in range(16) if alphabet[(last & ~0b1111) | spare] != sig[-1]
    ]
    for other in same_bits:  # 64 bytes = 86 characters: the last carries 2 bits and 4 spare ones
        assert not verify_record_signature(record_id, identity.did, sig[:-1] + other)
    assert not verify_record_signature(record_id, identity.did, sig[:40] + "!" + sig[40:])
    assert not verify_record_signature(record_id, identity.did, sig + "==")
