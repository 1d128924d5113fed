"""The rotation chain (spl.core.rotation): what links an instance's identifier to the key that signs now.

Every way a chain can lie is refused with a reason: a forged or altered step, a step signed by the wrong key, a
reordered or renumbered chain, a fork (two successors of one key), a key used twice, a chain for another
identifier; and, across time, a chain that does not extend the one a peer already pinned.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.feed import ManifestInvalid
from spl.core.handshake import (
    BadHandshakeSignature,
    HandshakeInvalid,
    build_notice,
    build_pair_request,
    build_pair_response,
    check_notice,
    check_pair_request,
    check_pair_response,
    unseal,
)
from spl.core.identity import Identity, InstanceIdentity, verify_record_signature
from spl.core.manifest import federation_manifest, manifest_keys, rfc3339, signed_manifest_did, verify_manifest
from spl.core.rotation import (
    MAX_ROTATIONS,
    RotationInvalid,
    check_extends,
    key_windows,
    owns,
    pinned_keys,
    rotation_statement,
    verify_chain,
)

# A few fixed keys (generating Ed25519 keys per example would make hypothesis slow for nothing).
KEYS = [Identity(bytes([index + 1]) * 32) for index in range(8)]


def chain(length: int, *, start: float = 1_700_000_000.0) -> tuple[str, list[dict[str, object]]]:
    """A valid chain of ``length`` rotations of KEYS[0]'s instance: KEYS[0] → KEYS[1] → …"""
    did = KEYS[0].did
    statements = [
        rotation_statement(
            KEYS[step], did=did, seq=step + 1, next_key=KEYS[step + 1].did, rotated_at=rfc3339(start + step)
        )
        for step in range(length)
    ]
    return did, statements


@given(st.integers(min_value=0, max_value=6))
def test_a_valid_chain_yields_every_key_inception_first(length: int) -> None:
    did, statements = chain(length)
    assert verify_chain(did, statements) == tuple(key.did for key in KEYS[: length + 1])


@settings(max_examples=60)
@given(
    st.integers(min_value=1, max_value=5),
    st.data(),
)
def test_any_altered_field_is_refused(length: int, data: st.DataObject) -> None:
    did, statements = chain(length)
    step = data.draw(st.integers(min_value=0, max_value=length - 1))
    field = data.draw(st.sampled_from(["did", "seq", "previous_key", "next_key", "rotated_at", "signature", "object"]))
    forged = dict(statements[step])
    forged[field] = {
        "did": KEYS[7].did,
        "seq": 99,
        "previous_key": KEYS[7].did,
        "next_key": KEYS[7].did,
        "rotated_at": "2031-01-01T00:00:00Z",
        "signature": KEYS[7].sign(b"x"),
        "object": "other",
    }[field]
    statements[step] = forged
    with pytest.raises(RotationInvalid):
        verify_chain(did, statements)


def test_a_step_signed_by_the_wrong_key_is_refused() -> None:
    did, statements = chain(2)
    # Step 2 claims to retire KEYS[1] but is signed by KEYS[5] (who does not hold KEYS[1]).
    body = {key: value for key, value in statements[1].items() if key != "signature"}
    impostor = rotation_statement(KEYS[5], did=did, seq=2, next_key=KEYS[6].did, rotated_at=str(body["rotated_at"]))
    impostor["previous_key"] = KEYS[1].did
    statements[1] = impostor
    with pytest.raises(RotationInvalid, match="does not verify against the key it retires"):
        verify_chain(did, statements)


@given(st.permutations(range(4)))
def test_a_reordered_chain_is_refused(order: list[int]) -> None:
    did, statements = chain(4)
    shuffled = [statements[index] for index in order]
    if order == sorted(order):
        assert verify_chain(did, shuffled)[-1] == KEYS[4].did
    else:
        with pytest.raises(RotationInvalid, match="reordered"):
            verify_chain(did, shuffled)


def test_a_fork_is_refused() -> None:
    did, statements = chain(2)
    # Whoever kept KEYS[0] signs a second successor: the chain names two successors of one key.
    fork = rotation_statement(KEYS[0], did=did, seq=3, next_key=KEYS[6].did, rotated_at=rfc3339(1_800_000_000))
    with pytest.raises(RotationInvalid, match="fork"):
        verify_chain(did, [*statements, fork])


def test_a_chain_for_another_identifier_or_reusing_a_key_is_refused() -> None:
    did, statements = chain(2)
    with pytest.raises(RotationInvalid, match="does not start at the pinned identifier"):
        verify_chain(KEYS[1].did, statements)  # pinned a later key as if it were the identifier
    with pytest.raises(RotationInvalid, match="not a did:key"):
        verify_chain("did:web:example.com", statements)
    back = rotation_statement(KEYS[2], did=did, seq=3, next_key=KEYS[0].did, rotated_at=rfc3339(1_800_000_000))
    with pytest.raises(RotationInvalid, match="never used twice"):
        verify_chain(did, [*statements, back])


def test_hostile_shapes_are_refused_before_any_signature_check() -> None:
    did, statements = chain(1)
    for bad in ("not a list", [1], [{"object": "identity_rotation"}], [{**statements[0], "extra": 1}]):
        with pytest.raises(RotationInvalid):
            verify_chain(did, bad)
    with pytest.raises(RotationInvalid, match="more than"):
        verify_chain(did, [statements[0]] * (MAX_ROTATIONS + 1))
    with pytest.raises(RotationInvalid, match="at most"):
        verify_chain(did, [{**statements[0], "next_key": "did:key:z" + "1" * 5000}])


def test_a_chain_must_extend_what_was_pinned() -> None:
    keys = tuple(key.did for key in KEYS[:4])
    check_extends(keys[:2], keys, who="peer")  # the peer rotated twice more: fine
    check_extends((), keys, who="peer")
    with pytest.raises(RotationInvalid, match="already proved"):
        check_extends(keys, keys[:2], who="peer")  # an old manifest replayed
    with pytest.raises(RotationInvalid, match="forks"):
        check_extends(keys[:3], (*keys[:2], KEYS[7].did), who="peer")


def test_instance_identity_rotates_under_the_same_identifier() -> None:
    instance = InstanceIdentity(KEYS[0].seed)
    statement = rotation_statement(
        KEYS[0], did=instance.did, seq=1, next_key=KEYS[1].did, rotated_at=rfc3339(time.time())
    )
    instance.rotate(KEYS[1], statement)
    assert instance.did == KEYS[0].did and instance.key_did == KEYS[1].did
    assert instance.own_keys == {KEYS[0].did, KEYS[1].did}
    signer, sig = instance.signed_id("ab" * 32)
    assert signer == KEYS[1].did and verify_record_signature("ab" * 32, signer, sig)
    assert owns(instance.own_keys, KEYS[0].did) and not owns(instance.own_keys, KEYS[2].did)
    assert "seed" not in repr(instance)

    document = federation_manifest(instance, endpoint="http://127.0.0.1:1")
    assert verify_manifest(document)
    assert manifest_keys(document) == (KEYS[0].did, KEYS[1].did)
    assert pinned_keys(document, KEYS[0].did) == (KEYS[0].did, KEYS[1].did)
    assert document["keys"] == key_windows(instance.keys, instance.statements)
    did, _ = signed_manifest_did(json.dumps(document).encode(), where="peer", now=time.time())
    assert did == KEYS[0].did

    # A notice signed with the new key verifies only for a receiver that pinned it.
    notice = build_notice(
        instance, pair_id="pair_" + "0" * 16, receiver_did=KEYS[5].did, event="sync", reason="", now=time.time()
    )
    with pytest.raises(BadHandshakeSignature):
        check_notice(notice, own_did=KEYS[5].did, now=time.time())
    pinned = {KEYS[0].did: instance.keys}
    checked = check_notice(notice, own_did=KEYS[5].did, now=time.time(), keys_of=lambda did: pinned.get(did, ()))
    assert checked.sender_did == KEYS[0].did


def test_a_manifest_signed_by_a_key_outside_its_chain_does_not_verify() -> None:
    swapped = InstanceIdentity(KEYS[3].seed, did=KEYS[0].did, keys=(KEYS[0].did, KEYS[3].did))  # no statement
    document = federation_manifest(swapped, endpoint="http://127.0.0.1:1")
    assert not verify_manifest(document)
    with pytest.raises(ManifestInvalid, match="not linked to its DID"):
        signed_manifest_did(json.dumps(document).encode(), where="peer", now=time.time())


def test_a_rotated_initiator_pairs_and_receives_its_token_sealed_to_its_current_key() -> None:
    initiator = InstanceIdentity(KEYS[0].seed)
    now = time.time()
    step = rotation_statement(KEYS[0], did=initiator.did, seq=1, next_key=KEYS[1].did, rotated_at=rfc3339(now))
    initiator.rotate(KEYS[1], step)
    responder = KEYS[5]
    token = "spl_live_sa-x_" + "ab" * 32
    request_doc = build_pair_request(
        initiator,
        responder_did=responder.did,
        initiator_url="http://127.0.0.1:1",
        poll_interval=1.0,
        token=token,
        token_expires_at=now + 600,
        now=now,
    )
    request = check_pair_request(request_doc, own_did=responder.did, now=now)
    assert request.initiator_did == KEYS[0].did and request.initiator_keys == (KEYS[0].did, KEYS[1].did)
    assert unseal(responder, request.token_sealed) == token

    # A forged chain in the request is refused before the signature is even tried.
    forged = {**request_doc, "initiator_rotations": [{**step, "next_key": KEYS[6].did}]}
    with pytest.raises(HandshakeInvalid, match="initiator_rotations"):
        check_pair_request(forged, own_did=responder.did, now=now)

    answer = build_pair_response(
        responder,
        request=request,
        status="active",
        maps=request.maps,
        token="spl_live_sa-y_" + "cd" * 32,
        token_expires_at=now + 600,
        poll_endpoint="http://127.0.0.1:2/v1/federation/pair/poll",
        now=now,
    )
    checked = check_pair_response(
        answer, initiator=initiator, responder_did=responder.did, pair_id=request.pair_id, nonce=request.nonce, now=now
    )
    assert checked.token == "spl_live_sa-y_" + "cd" * 32  # sealed to KEYS[1]: the initiator opens it
