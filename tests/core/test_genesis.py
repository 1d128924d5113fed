"""Genesis records of the six reserved threads: their bodies, and that the store writes each once per identity."""

from __future__ import annotations

from pathlib import Path

from spl.core.actor_registry import ActorRegistry
from spl.core.consent import ConsentBook
from spl.core.genesis import GENESIS_KIND, GENESIS_THREADS, PURPOSES, genesis_envelopes, is_genesis
from spl.core.identity import Identity, verify_record_signature
from spl.core.namespaces import NamespaceRegistry
from spl.core.record import validate_envelope
from spl.core.reserved import RESERVED_THREADS
from spl.core.stored import Candidate
from spl.daemon.bootstrap import initialise, write_missing_genesis
from spl.daemon.home import Home
from spl.store.database import connect_writer
from spl.store.genesis import ensure_genesis, missing_genesis, own_genesis_count
from spl.store.ingest import commit_batch, load_writer_state
from spl.store.portability import own_record_count
from spl.store.queries import thread_fold, thread_objects

DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def test_six_genesis_envelopes_one_per_reserved_thread_as_seed_003_states_them() -> None:
    envelopes = genesis_envelopes(DID, 1_700_000_000_000_000)
    assert [envelope.thread for envelope in envelopes] == list(GENESIS_THREADS)
    assert set(GENESIS_THREADS) <= RESERVED_THREADS and len(GENESIS_THREADS) == 6
    for envelope in envelopes:
        assert envelope.act == "INTEND" and envelope.actor == DID
        goal, read_by = PURPOSES[envelope.thread]
        assert envelope.body["kind"] == GENESIS_KIND and envelope.body["_v"] == 1
        assert (envelope.body["goal"], envelope.body["read_by"]) == (goal, read_by)
        assert is_genesis(envelope.act, envelope.body)
    registry = next(envelope for envelope in envelopes if envelope.thread == "th_instance_registry")
    assert registry.body["instance"]["did"] == DID and "records" in registry.body["instance"]["capabilities"]
    # Deterministic: the same DID and clock give the same records (content-addressed ids).
    assert [e.id for e in envelopes] == [e.id for e in genesis_envelopes(DID, 1_700_000_000_000_000)]


def test_existing_folds_ignore_genesis_records() -> None:
    records = [
        {**envelope.fields(), "signer": DID, "sequence": seq}
        for seq, envelope in enumerate(genesis_envelopes(DID, 5), start=1)
    ]
    assert NamespaceRegistry.folded(records, DID) == NamespaceRegistry()
    assert ActorRegistry.folded(records, DID).entries == {}
    book = ConsentBook()
    assert not any(book.apply(record, record["sequence"], DID) for record in records)


def _home(tmp_path: Path) -> Home:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    return home


def test_init_writes_the_six_signed_by_the_instance_and_they_are_not_own_data(tmp_path: Path) -> None:
    home = _home(tmp_path)
    identity = home.load_identity()
    connection = connect_writer(home.db_path)
    try:
        for thread in GENESIS_THREADS:
            (record,) = thread_objects(connection, thread)
            assert record["signer"] == record["actor"] == identity.did
            assert verify_record_signature(record["id"], identity.did, record["sig"])
            fold = thread_fold(connection, thread)
            assert fold is not None and fold["participants"][0]["role"] == "opener"
        assert own_genesis_count(connection) == 6
        assert own_record_count(connection) == 0  # a fresh steward takes an import without --force-overwrite
        # Idempotent: nothing is missing, nothing more is written.
        assert missing_genesis(connection, identity.did) == []
        assert ensure_genesis(connection, identity) == 0
        assert write_missing_genesis(connection, identity) == 0
    finally:
        connection.close()


def test_a_new_identity_gets_its_own_six_once_and_old_ones_stay_excluded(tmp_path: Path) -> None:
    home = _home(tmp_path)
    initialise(home, force=True)  # spl init --force: a new identity, its own genesis records
    connection = connect_writer(home.db_path)
    try:
        assert connection.execute("SELECT COUNT(*) FROM records").fetchall() == [(12,)]
        assert own_record_count(connection) == 0
        newer = Identity.generate()  # e.g. `spl identity generate`: the daemon's start writes its six
        assert write_missing_genesis(connection, newer) == 6
        assert ensure_genesis(connection, newer) == 0
        assert own_genesis_count(connection) == 18 and own_record_count(connection) == 0
    finally:
        connection.close()


def test_genesis_never_reuses_a_clock_the_instance_already_holds(tmp_path: Path) -> None:
    """A home from an older spl may hold the instance's records on a reserved thread, with clocks ahead of now."""
    home = _home(tmp_path)
    identity = Identity.generate()
    earlier = validate_envelope(
        {"act": "LEARN", "actor": identity.did, "thread": "th_consent", "clock": 100, "body": {"kind": "x.y.z"}}
    )
    connection = connect_writer(home.db_path)
    try:
        candidate = Candidate(earlier, identity.did, identity.sign_record_id(earlier.id))
        commit_batch(connection, [[candidate]], load_writer_state(connection, identity.did))
        assert ensure_genesis(connection, identity, now=lambda: 50) == 6
        (genesis,) = [
            r
            for r in thread_objects(connection, "th_consent")
            if is_genesis(r["act"], r["body"]) and r["signer"] == identity.did
        ]
        assert genesis["clock"] == 101
        assert own_record_count(connection) == 1  # the LEARN is data of its own; the genesis records are not
    finally:
        connection.close()
