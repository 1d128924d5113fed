"""The pure part of discovery: the mDNS TXT codec and table, the did:web document, the did:sync directory.

Everything a discovery method reads comes from a stranger (a LAN, a web server, a directory), so most of these
tests feed hostile values and check they are refused or bounded rather than kept.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.discovery import Directory as DirectoryTable
from spl.core.discovery import (
    FoundPeer,
    MdnsTable,
    decode_txt,
    did_document,
    did_web,
    did_web_url,
    encode_txt,
    listed_peer,
    manifest_key_list,
    parse_did_document,
)
from spl.core.errors import InvalidRequest
from spl.core.identity import Identity
from spl.core.manifest import federation_manifest

NOW = 1_800_000_000.0
DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
OLD_DID = "did:key:z6MkkaGNmeDcBNvrfqptZsrVhv6VAKcjKM32fReHLykiCCak"


# -- mDNS TXT ------------------------------------------------------------------------------------------


def test_what_is_announced_decodes_to_the_same_peer() -> None:
    txt = encode_txt(DID, "http://10.0.0.2:9100", ["default", "team/a"])
    wire = {key.encode(): value.encode() for key, value in txt.items()}  # zeroconf hands bytes
    peer = decode_txt(wire, name="spl-1._syncropel._tcp.local.", now=NOW)
    assert (peer.did, peer.endpoint, peer.namespaces, peer.method) == (
        DID,
        "http://10.0.0.2:9100",
        ["default", "team/a"],
        "mdns",
    )
    assert peer.last_seen == NOW


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("did", b"not-a-did"),
        ("did", b"did:key:" + b"z" * 300),
        ("did", "did:key:z6Mk\u202e".encode()),
        ("ep", b"ftp://10.0.0.2/"),
        ("ep", b"http://user:secret@10.0.0.2:9100"),
        ("ep", b"http://10.0.0.2:9100/?next=evil"),
        ("ep", b"http://10.0.0.2:9100/\x1b]0;pwned\x07"),
        ("ep", b"http://" + b"a" * 300),
        ("ep", b"\xff\xfe"),
    ],
)
def test_a_hostile_announcement_is_refused(field: str, value: bytes) -> None:
    txt = {b"did": DID.encode(), b"ep": b"http://10.0.0.2:9100", field.encode(): value}
    with pytest.raises(ValueError) as refused:
        decode_txt(txt, name="evil._syncropel._tcp.local.", now=NOW)
    assert "\x1b" not in str(refused.value) and "secret" not in str(refused.value)


def test_namespaces_from_the_lan_are_filtered_and_capped() -> None:
    junk = ",".join(["default", "../../etc", "UPPER", "ok-1", *(f"n{i}" for i in range(40))])
    peer = decode_txt({"did": DID, "ep": "http://h:1", "ns": junk[:255]}, name="x", now=NOW)
    assert peer.namespaces[:2] == ["default", "ok-1"] and len(peer.namespaces) <= 16
    assert all(name not in peer.namespaces for name in ("../../etc", "UPPER"))
    assert len(encode_txt(DID, "http://h:1", [f"namespace-{i:03d}" for i in range(100)])["ns"]) <= 252


def test_the_mdns_table_is_capped_and_expires() -> None:
    table = MdnsTable(capacity=3, ttl=60)
    for index in range(5):
        table.seen(f"s{index}", FoundPeer("mdns", f"http://h:{index + 1}", DID, last_seen=NOW + index))
    assert [peer.endpoint for peer in table.peers(NOW)] == ["http://h:5", "http://h:4", "http://h:3"]
    table.seen("s2", FoundPeer("mdns", "http://h:3", DID, last_seen=NOW + 10))  # re-announced: newest again
    table.gone("s4")
    assert [peer.endpoint for peer in table.peers(NOW + 10)] == ["http://h:3", "http://h:4"]
    assert [peer.endpoint for peer in table.peers(NOW + 65)] == ["http://h:3"]  # s3 (seen at +3) expired
    assert table.peers(NOW + 71) == [] and len(table) == 0


def test_a_listing_from_another_process_is_checked_again() -> None:
    good = {"did": DID, "endpoint": "http://h:1/", "namespaces": ["default", 5], "last_seen": "2027-01-15T08:00:00Z"}
    peer = listed_peer(good, "mdns")
    assert peer.endpoint == "http://h:1" and peer.namespaces == ["default"] and peer.last_seen is not None
    with pytest.raises(ValueError):
        listed_peer({"did": DID, "endpoint": "javascript:alert(1)"}, "did-sync")


# -- did:web -------------------------------------------------------------------------------------------


def test_did_web_names_and_urls() -> None:
    assert did_web("Alice.dev") == "did:web:alice.dev"
    assert did_web("localhost:8443") == "did:web:localhost%3A8443"
    assert did_web_url("localhost:8443") == "https://localhost:8443/.well-known/did.json"
    for bad in ("https://alice.dev", "alice.dev/path", "alice dev", "", "a..b", "-a.dev", "x" * 300):
        with pytest.raises(InvalidRequest):
            did_web(bad)


def test_the_did_document_lists_every_key_and_only_the_current_one_authenticates() -> None:
    keys = [(OLD_DID, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"), (DID, "2026-06-01T00:00:00Z", None)]
    document = did_document("alice.dev", keys, "https://spl.alice.dev/")
    assert document["id"] == "did:web:alice.dev" and document["alsoKnownAs"] == [DID]
    methods = document["verificationMethod"]
    assert [method["type"] for method in methods] == ["Ed25519VerificationKey2020"] * 2
    assert methods[0]["validUntil"] == "2026-06-01T00:00:00Z" and "validUntil" not in methods[1]
    assert document["authentication"] == [methods[1]["id"]] == document["assertionMethod"]
    assert document["service"] == [
        {"id": "did:web:alice.dev#syncropel", "type": "syncropel", "serviceEndpoint": "https://spl.alice.dev"}
    ]
    peer = parse_did_document(json.loads(json.dumps(document)), "alice.dev", now=NOW)
    assert (peer.method, peer.did, peer.endpoint, peer.expect_dids) == (
        "did-web",
        "did:web:alice.dev",
        "https://spl.alice.dev",
        (DID,),
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc.update(id="did:web:mallory.dev"),
        lambda doc: doc.update(service=[{"type": "syncropel", "serviceEndpoint": "http://u:p@h/"}]),
        lambda doc: doc.update(service="nope"),
        lambda doc: doc.update(verificationMethod=[]),
        lambda doc: doc["verificationMethod"][0].update(type="JsonWebKey2020"),
    ],
)
def test_a_did_document_that_does_not_name_a_usable_key_and_endpoint_is_refused(change: object) -> None:
    document = did_document("alice.dev", [(DID, "2026-01-01T00:00:00Z", None)], "https://spl.alice.dev")
    change(document)  # type: ignore[operator]
    with pytest.raises(ValueError):
        parse_did_document(document, "alice.dev", now=NOW)


# -- the did:sync directory ------------------------------------------------------------------------------


def manifest_body(identity: Identity, *, now: float = NOW, endpoint: str = "http://10.0.0.2:9100") -> bytes:
    return json.dumps(
        {"object": "discovery", "federation_manifest": federation_manifest(identity, endpoint=endpoint, now=now)}
    ).encode()


def test_a_signed_manifest_registers_resolves_and_lists_by_namespace() -> None:
    identity = Identity.generate()
    directory = DirectoryTable(ttl=600)
    entry = directory.register(manifest_body(identity), now=NOW)
    assert (entry.did, entry.endpoint, entry.namespaces) == (identity.did, "http://10.0.0.2:9100", ["default"])
    assert directory.resolve(identity.did, now=NOW + 1) == entry
    assert directory.listing("default", now=NOW + 1) == [entry] and directory.listing("other", now=NOW + 1) == []
    # Refreshed with a newer manifest: replaced, not duplicated; it moves the endpoint.
    moved = directory.register(manifest_body(identity, now=NOW + 5, endpoint="http://10.0.0.3:9100"), now=NOW + 5)
    assert len(directory) == 1 and directory.resolve(identity.did, now=NOW + 6) == moved
    # Not refreshed: gone after the TTL.
    assert directory.resolve(identity.did, now=NOW + 606) is None and len(directory) == 0


def test_a_replayed_older_manifest_cannot_move_a_did_back() -> None:
    identity = Identity.generate()
    directory = DirectoryTable()
    old = manifest_body(identity, now=NOW - 100, endpoint="http://old.example:9100")
    directory.register(manifest_body(identity, now=NOW), now=NOW)
    with pytest.raises(InvalidRequest) as refused:
        directory.register(old, now=NOW + 1)
    assert refused.value.code == "STALE_REGISTRATION" and refused.value.status == 409
    assert directory.resolve(identity.did, now=NOW + 1).endpoint == "http://10.0.0.2:9100"  # type: ignore[union-attr]


def test_a_forged_or_broken_registration_is_refused() -> None:
    identity, mallory = Identity.generate(), Identity.generate()
    forged = json.loads(manifest_body(identity))
    forged["federation_manifest"]["federation"]["endpoint"] = "http://mallory.example:9100"
    stolen = json.loads(manifest_body(mallory))
    stolen["federation_manifest"]["daemon"]["did"] = identity.did
    directory = DirectoryTable()
    for body in (json.dumps(forged).encode(), json.dumps(stolen).encode(), b"not json", b"[]", b"{}"):
        with pytest.raises(InvalidRequest) as refused:
            directory.register(body, now=NOW)
        assert refused.value.code == "MANIFEST_INVALID"
    expired = manifest_body(identity, now=NOW - 8 * 86400)
    with pytest.raises(InvalidRequest):
        directory.register(expired, now=NOW)
    assert len(directory) == 0


def test_the_directory_is_bounded_and_the_least_recently_refreshed_gives_way() -> None:
    directory = DirectoryTable(capacity=3)
    identities = [Identity.generate() for _ in range(4)]
    for offset, identity in enumerate(identities):
        directory.register(manifest_body(identity), now=NOW + offset)
    assert len(directory) == 3 and directory.resolve(identities[0].did, now=NOW + 4) is None
    assert [entry.did for entry in directory.listing(None, now=NOW + 4, limit=2)] == [
        identities[3].did,
        identities[2].did,
    ]


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = (
    scalars
    | st.lists(scalars, max_size=4)
    | st.dictionaries(st.text(max_size=10), scalars | st.lists(scalars, max_size=3), max_size=4)
)


SIGNED = json.loads(manifest_body(Identity.generate()))["federation_manifest"]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["object", "daemon", "signature", "federation", "validity", "x"]), json_values))
def test_any_registration_body_is_refused_cleanly(body: dict[str, object]) -> None:
    """Whatever a stranger posts ends in a 4xx-class error, never another exception."""
    altered = [{**SIGNED, **body}] if body else []  # an empty change leaves the valid manifest
    for candidate in (body, *altered, {"federation_manifest": body}):
        with pytest.raises(InvalidRequest):
            DirectoryTable().register(json.dumps(candidate).encode(), now=NOW)


def test_after_a_rotation_the_document_lists_every_key_and_the_lifelong_identifier() -> None:
    """The manifest of a rotated instance names its identifier (the inception key) and is signed by a later key:
    the document carries both, so a manifest under either verifies against it."""
    manifest = {
        "keys": [
            {"id": OLD_DID, "valid_from": None, "valid_until": "2026-06-01T00:00:00Z"},
            {"id": DID, "valid_from": "2026-06-01T00:00:00Z", "valid_until": None},
            {"id": "not a key"},
        ]
    }
    keys = manifest_key_list(manifest, did=OLD_DID, created_at="2026-01-01T00:00:00Z")
    assert keys == [(OLD_DID, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"), (DID, "2026-06-01T00:00:00Z", None)]
    assert manifest_key_list({}, did=DID, created_at="t") == [(DID, "t", None)]
    document = did_document("alice.dev", keys, "https://spl.alice.dev", identifier=OLD_DID)
    assert document["alsoKnownAs"] == [OLD_DID, DID]
    assert set(parse_did_document(document, "alice.dev", now=NOW).expect_dids) == {OLD_DID, DID}
