"""The export bundle format (spl.core.bundle): paths, manifest, chained digest, sealed identity, records.

A bundle is modelled here as an ordered ``{path: bytes}``: exactly what a tar reader hands the
checker, without the tar. Every tamper test flips one byte of one file and expects the refusal
an importer must answer with before writing anything.
"""

from __future__ import annotations

import json
import secrets
import string

import msgspec
import nacl.pwhash
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spl.core.bundle import (
    BUNDLE_VERSION,
    CONFIG,
    CONSENT_GRANTS,
    DID_DOCUMENT,
    FEDERATION_PAIRS,
    MANIFEST,
    MANIFEST_SIG,
    PRIVATE_KEY,
    TOKENS,
    BundleDigest,
    BundleMalformed,
    BundleSignatureInvalid,
    Manifest,
    build_manifest,
    check_digest,
    check_files,
    check_identity,
    check_record_file,
    did_document,
    file_sha256,
    manifest_bytes,
    new_digest,
    parse_record_path,
    plain_private_key,
    private_key_is_sealed,
    record_path,
    seal_private_key,
    sign_manifest,
    unseal_private_key,
    verify_manifest,
)
from spl.core.canonical import canonical_json
from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.stored import Candidate, stored_json

ARGON = nacl.pwhash.argon2id
THREAD_CHARS = string.ascii_letters + string.digits + "_.:@-"
CREATED = "2026-11-30T12:00:00Z"


def _seal(seed: bytes, passphrase: bytes, salt: bytes) -> bytes:
    """Sealed with the cheapest argon2id limits: the format is under test here, not the KDF's cost."""
    return seal_private_key(seed, passphrase, salt=salt, opslimit=ARGON.OPSLIMIT_MIN, memlimit=ARGON.MEMLIMIT_MIN)


def _record(identity: Identity, thread: str, clock: int) -> tuple[str, bytes]:
    envelope = validate_envelope(
        {"act": "PUT", "actor": "did:sync:user:test", "thread": thread, "clock": clock, "body": {"n": clock}}
    )
    text = stored_json(
        envelope, signer=identity.did, sig=identity.sign_record_id(envelope.id), seq=clock, created_at=0.0
    )
    return record_path(thread, envelope.id), text.encode("ascii")


def _bundle(
    identity: Identity,
    *,
    passphrase: bytes | None = None,
    with_identity: bool = True,
    tokens: bool = False,
    threads: tuple[str, ...] = ("th_a", ".", "..", "th_a-"),
) -> dict[str, bytes]:
    """A whole bundle as the exporter writes it: named files in path order, records in log order, manifest last."""
    files: dict[str, bytes] = {
        CONFIG: b'{"port":9100}',
        CONSENT_GRANTS: b'{"grant":1}\n',
        FEDERATION_PAIRS: b'{"pair":1}\n',
        DID_DOCUMENT: canonical_json(did_document(identity)),
    }
    if with_identity:
        files[PRIVATE_KEY] = (
            _seal(identity.seed, passphrase, secrets.token_bytes(16))
            if passphrase
            else plain_private_key(identity.seed)
        )
    if tokens:
        files[TOKENS] = b'{"token_id":"t1","sha256":"00"}\n'
    files = dict(sorted(files.items()))
    for clock in (1, 2):  # log order: interleaved threads, as a store's sequence order would have them
        for thread in threads:
            path, data = _record(identity, thread, clock)
            files[path] = data
    digest = new_digest()
    for path, data in files.items():
        digest.add(path, file_sha256(data))
    manifest = build_manifest(
        source_did=identity.did,
        created_at=CREATED,
        counts={"threads": len(threads), "federation_pairs": 1, "consent_grants": 1},
        digest=digest,
        identity_sealed=bool(passphrase) and with_identity,
        carries_tokens=tokens,
    )
    return files | {MANIFEST: manifest_bytes(manifest), MANIFEST_SIG: sign_manifest(identity, manifest).encode("ascii")}


def _import(bundle: dict[str, bytes], passphrase: bytes | None = None) -> tuple[Manifest, Identity | None, int]:
    """What an importer does before writing anything: every check, in tar order, one pass."""
    members = list(bundle.items())
    assert [path for path, _ in members[-2:]] == [MANIFEST, MANIFEST_SIG]
    digest = new_digest()
    records = 0
    seed = None
    document = b""
    for path, data in members[:-2]:
        digest.add(path, file_sha256(data))
        if path.startswith("records/"):
            check_record_file(path, data)
            records += 1
        elif path == PRIVATE_KEY:
            seed = unseal_private_key(data, passphrase)  # a wrong passphrase is refused here, before any record
        elif path == DID_DOCUMENT:
            document = data
    manifest = verify_manifest(members[-2][1], members[-1][1])
    check_digest(manifest, digest)
    if PRIVATE_KEY in bundle:
        assert private_key_is_sealed(bundle[PRIVATE_KEY]) == manifest.identity_sealed
    return manifest, check_identity(document, seed, source_did=manifest.source_did), records


# -- paths ---------------------------------------------------------------------------------------


@given(st.text(alphabet=THREAD_CHARS, min_size=1, max_size=256), st.binary(min_size=32, max_size=32))
def test_record_path_round_trips_and_never_yields_a_dot_segment(thread: str, raw_id: bytes) -> None:
    record_id = raw_id.hex()
    path = record_path(thread, record_id)
    assert parse_record_path(path) == (thread, record_id)
    segments = path.split("/")
    assert len(segments) == 3
    assert all(segment not in ("", ".", "..") for segment in segments)


@pytest.mark.parametrize(
    "path",
    [
        "records/../" + "a" * 64 + ".json",
        "records/2e/" + "A" * 64 + ".json",  # upper-case id
        "records/2e/" + "a" * 64,  # no .json
        "records/2/" + "a" * 64 + ".json",  # odd hex
        "records//" + "a" * 64 + ".json",
        "records/2e/x/" + "a" * 64 + ".json",
        "records/2f/" + "a" * 64 + ".json",  # "/" is not a thread character
        "records/" + "61" * 257 + "/" + "a" * 64 + ".json",  # thread longer than 256
        "/etc/passwd",
    ],
)
def test_bad_record_paths_are_malformed(path: str) -> None:
    with pytest.raises(BundleMalformed, match="^bundle malformed: "):
        parse_record_path(path)


def test_record_path_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        record_path("a/b", "0" * 64)
    with pytest.raises(ValueError):
        record_path("ok", "0" * 63)


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_plain_identity() -> None:
    identity = Identity.generate()
    manifest, adopted, records = _import(_bundle(identity))
    assert manifest.bundle_version == BUNDLE_VERSION
    assert manifest.source_did == identity.did
    assert (manifest.record_count, manifest.counts["threads"], records) == (8, 4, 8)
    assert manifest.counts["federation_pairs"] == 1
    assert manifest.identity_included and not manifest.identity_sealed and not manifest.carries_tokens
    assert adopted is not None and adopted.did == identity.did


def test_round_trip_sealed_identity_and_tokens() -> None:
    identity = Identity.generate()
    manifest, adopted, _ = _import(_bundle(identity, passphrase=b"correct horse", tokens=True), b"correct horse")
    assert manifest.identity_sealed and manifest.carries_tokens
    assert adopted is not None and adopted.seed == identity.seed


def test_round_trip_without_identity() -> None:
    identity = Identity.generate()
    manifest, adopted, _ = _import(_bundle(identity, with_identity=False))
    assert not manifest.identity_included and adopted is None


def test_empty_bundle() -> None:
    identity = Identity.generate()
    manifest, _, records = _import(_bundle(identity, threads=()))
    assert (manifest.record_count, records) == (0, 0)


# -- tampering -----------------------------------------------------------------------------------


def _flip(bundle: dict[str, bytes], path: str, index: int) -> dict[str, bytes]:
    data = bytearray(bundle[path])
    data[index % len(data)] ^= 0x01
    return bundle | {path: bytes(data)}


@pytest.mark.parametrize("passphrase", [None, b"pw"])
def test_one_flipped_byte_anywhere_is_refused(passphrase: bytes | None) -> None:
    identity = Identity.generate()
    bundle = _bundle(identity, passphrase=passphrase, tokens=True)
    for path in bundle:
        size = len(bundle[path])
        for index in {0, 1, size // 2, size - 1}:
            with pytest.raises((BundleMalformed, BundleSignatureInvalid)):
                _import(_flip(bundle, path, index), passphrase)


def test_flipped_record_byte_is_caught_by_the_chain_even_unparsed() -> None:
    # An importer might check hashes before parsing records: the chain alone must refuse.
    identity = Identity.generate()
    bundle = _bundle(identity)
    path = next(p for p in bundle if p.startswith("records/"))
    tampered = _flip(bundle, path, 30)
    manifest = verify_manifest(tampered[MANIFEST], tampered[MANIFEST_SIG])
    seen = {p: file_sha256(d) for p, d in tampered.items() if p not in (MANIFEST, MANIFEST_SIG)}
    with pytest.raises(BundleMalformed, match="bundle_sha256 does not match"):
        check_files(manifest, seen)


def test_added_removed_repeated_reordered_files_are_refused() -> None:
    identity = Identity.generate()
    bundle = _bundle(identity)
    manifest = verify_manifest(bundle[MANIFEST], bundle[MANIFEST_SIG])
    seen = {p: file_sha256(d) for p, d in bundle.items() if p not in (MANIFEST, MANIFEST_SIG)}
    check_files(manifest, seen)
    records = [p for p in seen if p.startswith("records/")]
    named = {p: h for p, h in seen.items() if p not in records}
    extra_path, extra = _record(identity, "zz_extra", 1)
    with pytest.raises(BundleMalformed, match="holds 9 records"):
        check_files(manifest, seen | {extra_path: file_sha256(extra)})
    with pytest.raises(BundleMalformed, match="missing from the bundle"):
        check_files(manifest, {p: h for p, h in seen.items() if p != FEDERATION_PAIRS})
    with pytest.raises(BundleMalformed, match="not listed in the manifest"):
        check_files(manifest, named | {TOKENS: "0" * 64} | {p: seen[p] for p in records})
    with pytest.raises(BundleMalformed, match="holds 7 records"):
        check_files(manifest, {p: h for p, h in seen.items() if p != records[-1]})
    swapped = named | {records[1]: seen[records[1]], records[0]: seen[records[0]]} | {p: seen[p] for p in records[2:]}
    with pytest.raises(BundleMalformed, match="bundle_sha256 does not match"):
        check_files(manifest, swapped)
    # A record repeated in place of another: the counts agree, the chain does not.
    repeated = BundleDigest()
    for path, sha in [*named.items(), *((p, seen[p]) for p in [records[0], *records[:-1]])]:
        repeated.add(path, sha)
    with pytest.raises(BundleMalformed, match="bundle_sha256 does not match"):
        check_digest(manifest, repeated)


def test_named_file_tamper_names_the_file() -> None:
    identity = Identity.generate()
    bundle = _flip(_bundle(identity), CONFIG, 3)
    manifest = verify_manifest(bundle[MANIFEST], bundle[MANIFEST_SIG])
    with pytest.raises(BundleMalformed, match="config.json does not match its SHA-256"):
        check_files(manifest, {p: file_sha256(d) for p, d in bundle.items() if p not in (MANIFEST, MANIFEST_SIG)})


def test_digest_refuses_what_an_exporter_never_writes() -> None:
    sha = "0" * 64
    record = record_path("th", "a" * 64)
    for steps, message in [
        ([(FEDERATION_PAIRS, sha), (CONFIG, sha)], "out of place"),  # named files out of path order
        ([(CONFIG, sha), (CONFIG, sha)], "out of place"),  # repeated
        ([(record, sha), (CONFIG, sha)], "out of place"),  # after a record
        ([(MANIFEST, sha)], "last members"),
        ([("evil.sh", sha)], "not a file a bundle may hold"),
        ([(record, "A" * 64)], "not 64 lowercase hex"),
    ]:
        digest = new_digest()
        with pytest.raises(BundleMalformed, match=message):
            for path, value in steps:
                digest.add(path, value)


def test_manifest_signed_by_another_key_is_refused() -> None:
    identity, other = Identity.generate(), Identity.generate()
    bundle = _bundle(identity)
    forged = other.sign(bundle[MANIFEST]).encode("ascii")
    with pytest.raises(BundleSignatureInvalid, match="^signature verification failed: "):
        verify_manifest(bundle[MANIFEST], forged)


def test_manifest_rewritten_and_resigned_by_another_source_is_refused_by_the_identity_check() -> None:
    # An attacker can re-sign a manifest as themselves, but then source_did changes, and the
    # DID document (hash-listed) and the private key no longer match it.
    identity, attacker = Identity.generate(), Identity.generate()
    bundle = _bundle(identity)
    manifest = json.loads(bundle[MANIFEST]) | {"source_did": attacker.did}
    resigned = bundle | {
        MANIFEST: manifest_bytes(manifest),
        MANIFEST_SIG: sign_manifest(attacker, manifest).encode("ascii"),
    }
    with pytest.raises(BundleSignatureInvalid, match="different DID"):
        _import(resigned)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bundle_version": 2}, "bundle_version '2' is not supported"),
        ({"bundle_version": True}, "not supported"),
        ({"extra": 1}, "bad shape"),
        ({"files": {"evil.sh": "0" * 64}}, "not a file a bundle may hold"),
        ({"record_count": -1}, "bad shape"),
        ({"counts": {"records": [1]}}, "bad shape"),
        ({"carries_tokens": True}, "carries_tokens disagrees"),
        ({"file_count": 0}, "file_count"),
        ({"created_at": "yesterday"}, "RFC 3339"),
        ({"source_did": "did:web:example.com"}, "not a did:key"),
    ],
)
def test_bad_manifest_shapes_are_malformed(change: dict[str, object], message: str) -> None:
    identity = Identity.generate()
    manifest = json.loads(_bundle(identity, threads=())[MANIFEST]) | change
    data = canonical_json(manifest)
    with pytest.raises(BundleMalformed, match=message):
        verify_manifest(data, identity.sign(data).encode("ascii"))


def test_manifest_not_canonical_or_oversized_or_deep_is_malformed() -> None:
    identity = Identity.generate()
    bundle = _bundle(identity, threads=())
    spaced = json.dumps(json.loads(bundle[MANIFEST]), indent=1).encode()
    with pytest.raises(BundleMalformed, match="canonical"):
        verify_manifest(spaced, identity.sign(spaced).encode("ascii"))
    with pytest.raises(BundleMalformed, match="larger than"):
        verify_manifest(b" " * 70_000, b"")
    with pytest.raises(BundleMalformed):
        verify_manifest(b"[" * 60_000, b"")
    with pytest.raises(BundleMalformed, match="manifest.sig"):
        verify_manifest(bundle[MANIFEST], b"x" * 300)
    with pytest.raises(BundleSignatureInvalid):
        verify_manifest(bundle[MANIFEST], b"\xff\xfe")


def test_build_manifest_refuses_inconsistent_input() -> None:
    identity = Identity.generate()
    digest = new_digest()
    digest.add(DID_DOCUMENT, file_sha256(b"{}"))

    def build(counts: dict[str, int], carries_tokens: bool) -> dict[str, object]:
        return build_manifest(
            source_did=identity.did,
            created_at=CREATED,
            counts=counts,
            digest=digest,
            identity_sealed=False,
            carries_tokens=carries_tokens,
        )

    with pytest.raises(ValueError, match="records"):
        build({"records": 5}, False)
    with pytest.raises(ValueError, match="carries_tokens"):
        build({}, True)
    with pytest.raises(ValueError, match="signed by its signing_key, or by its source_did"):
        sign_manifest(Identity.generate(), build({}, False))


# -- identity ------------------------------------------------------------------------------------


def test_wrong_or_missing_passphrase_is_refused() -> None:
    seed = Identity.generate().seed
    blob = _seal(seed, b"right", b"s" * 16)
    assert unseal_private_key(blob, b"right") == seed
    with pytest.raises(BundleSignatureInvalid, match="wrong passphrase"):
        unseal_private_key(blob, b"wrong")
    with pytest.raises(BundleSignatureInvalid, match="--passphrase-file"):
        unseal_private_key(blob, None)
    assert seed not in blob


def test_sealed_blob_with_hostile_limits_or_shape_is_malformed() -> None:
    seed = Identity.generate().seed
    blob = _seal(seed, b"pw", b"s" * 16)
    header_end = blob.index(b"\n") + 1
    greedy = blob[:header_end] + (1).to_bytes(8, "big") + (2**40).to_bytes(8, "big") + blob[header_end + 16 :]
    with pytest.raises(BundleMalformed, match="argon2id limits"):
        unseal_private_key(greedy, b"pw")
    with pytest.raises(BundleMalformed, match="wrong length"):
        unseal_private_key(blob[:-1], b"pw")
    with pytest.raises(BundleMalformed, match="no known header"):
        unseal_private_key(b"garbage", b"pw")
    with pytest.raises(BundleMalformed, match="32-byte"):
        unseal_private_key(plain_private_key(seed)[:-1], None)


def test_did_document_shape_and_identity_check() -> None:
    identity = Identity.generate()
    document = did_document(identity)
    assert document["id"] == identity.did
    method = document["verificationMethod"][0]
    assert method["type"] == "Ed25519VerificationKey2020"
    assert method["publicKeyMultibase"] == identity.did.removeprefix("did:key:")
    data = canonical_json(document)
    assert check_identity(data, identity.seed, source_did=identity.did) is not None
    with pytest.raises(BundleSignatureInvalid, match="not the key that signed it"):
        check_identity(data, Identity.generate().seed, source_did=identity.did)
    altered = canonical_json(document | {"authentication": []})
    with pytest.raises(BundleMalformed, match="not the DID document"):
        check_identity(altered, None, source_did=identity.did)


# -- record files --------------------------------------------------------------------------------


def test_record_file_round_trip_and_mismatches() -> None:
    identity = Identity.generate()
    path, data = _record(identity, "th_x", 1)
    candidate = check_record_file(path, data)
    assert isinstance(candidate, Candidate) and candidate.envelope.thread == "th_x"
    _, other = _record(identity, "th_x", 2)
    with pytest.raises(BundleMalformed, match="another thread or id"):
        check_record_file(path, other)
    moved = record_path("th_y", candidate.envelope.id)
    with pytest.raises(BundleMalformed, match="another thread or id"):
        check_record_file(moved, data)
    record = json.loads(data)
    with pytest.raises(BundleSignatureInvalid):
        check_record_file(path, json.dumps(record | {"sig": Identity.generate().sign_record_id(record["id"])}).encode())
    with pytest.raises(BundleMalformed, match="ID_MISMATCH"):
        check_record_file(path, json.dumps(record | {"clock": 9}).encode())
    with pytest.raises(BundleMalformed, match="larger than"):
        check_record_file(path, data, max_bytes=10)
    with pytest.raises(BundleMalformed, match="not a JSON record"):
        check_record_file(path, b"[" * 100_000)


def test_signature_file_must_be_exact() -> None:
    # Base64 decoders forgive stray characters and the spare bits of the last digit; the checker must not.
    identity = Identity.generate()
    bundle = _bundle(identity, threads=())
    sig = bundle[MANIFEST_SIG]
    for variant in (sig + b"\n", b" " + sig, sig[:-1] + b"=", sig[:40] + b"." + sig[41:]):
        with pytest.raises(BundleSignatureInvalid):
            verify_manifest(bundle[MANIFEST], variant)
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(chr(sig[-1]))
    spare = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 0x03]
    with pytest.raises(BundleSignatureInvalid):
        verify_manifest(bundle[MANIFEST], sig[:-1] + spare.encode())


def test_bundle_sha256_is_the_documented_chain() -> None:
    # Another implementation must be able to recompute it from the module docstring alone.
    identity = Identity.generate()
    bundle = _bundle(identity)
    manifest = json.loads(bundle[MANIFEST])
    covered = [(p, file_sha256(d)) for p, d in bundle.items() if p not in (MANIFEST, MANIFEST_SIG)]
    chain = "".join(f"{path}\t{sha}\n" for path, sha in covered).encode("ascii")
    assert manifest["bundle_sha256"] == file_sha256(chain)
    assert manifest["file_count"] == len(covered)
    assert manifest["files"] == {p: h for p, h in covered if not p.startswith("records/")}


def test_a_rotated_instances_chain_must_lead_to_the_key_that_signed() -> None:
    """A rotated instance's manifest names its current key; only a valid chain from source_did to it is accepted."""
    from spl.core.bundle import ROTATIONS, check_rotations
    from spl.core.rotation import rotation_statement

    first, second, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    step = rotation_statement(first, did=first.did, seq=1, next_key=second.did, rotated_at=CREATED)
    digest = new_digest()
    digest.add("identity/did_document.json", file_sha256(b"{}"))
    digest.add(ROTATIONS, file_sha256(b"[]"))
    built = build_manifest(
        source_did=first.did,
        created_at=CREATED,
        counts={},
        digest=digest,
        identity_sealed=False,
        carries_tokens=False,
        signing_key=second.did,
    )
    manifest = msgspec.convert(built, Manifest)
    assert check_rotations(manifest, canonical_json([step])) == [step]
    forged = rotation_statement(stranger, did=first.did, seq=1, next_key=second.did, rotated_at=CREATED)
    elsewhere = rotation_statement(first, did=first.did, seq=1, next_key=stranger.did, rotated_at=CREATED)
    for chain, reason in (([forged], "not a valid rotation chain"), ([elsewhere], "does not lead to the key")):
        with pytest.raises(BundleSignatureInvalid, match=reason):
            check_rotations(manifest, canonical_json(chain))
    with pytest.raises(BundleMalformed, match="missing or too large"):
        check_rotations(manifest, None)
    # A bundle of an instance that never rotated has no signing_key, and its manifest bytes are as before.
    assert "signing_key" not in msgspec.to_builtins(msgspec.convert({**built, "signing_key": None}, Manifest))
