"""Store functions that used to be SQL in routes and in ``spl init``: tokens, change pages, config threads."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.core.tokens import TokenInfo, mint
from spl.store.database import connect_writer, write_transaction
from spl.store.ingest import commit_batch, load_writer_state, namespace_registry
from spl.store.queries import change_page, count_after, thread_objects
from spl.store.tokens import LOCAL_ADMIN_SA, insert_token, install_local_admin, load_tokens, revoke_token

OWN = Identity.generate()
PEER = Identity.generate()


@pytest.fixture
def connection(tmp_path: Path) -> apsw.Connection:
    return connect_writer(tmp_path / "hub.db")


def store(connection: apsw.Connection, thread: str, count: int, *, pad: int = 0, signer: Identity = OWN) -> None:
    state = load_writer_state(connection, OWN.did)
    candidates = []
    for clock in range(count):
        envelope = validate_envelope(
            {"act": "PUT", "actor": "did:test:s", "thread": thread, "clock": clock, "body": {"pad": "x" * pad}}
        )
        candidates.append(Candidate(envelope, signer.did, signer.sign_record_id(envelope.id)))
    commit_batch(connection, [candidates], state)


def test_tokens_round_trip_and_a_revoke_happens_once(connection: apsw.Connection) -> None:
    info = TokenInfo.of_minted(mint("ci"), "label ✓", ["records:read", "admin"], 10.0)
    with write_transaction(connection):
        insert_token(connection, info)
    assert load_tokens(connection) == [info]
    with write_transaction(connection):
        assert revoke_token(connection, info.token_id, 11.0) is True
        assert revoke_token(connection, info.token_id, 12.0) is False
        assert revoke_token(connection, "no-such-token", 12.0) is False
    assert load_tokens(connection) == [info.revoked(11.0)]


def test_installing_the_local_admin_revokes_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "hub.db"
    path.parent.mkdir()
    first = TokenInfo.of_minted(mint("local", LOCAL_ADMIN_SA), "local admin", ["admin"], 100.0)
    other = TokenInfo.of_minted(mint("local"), "someone", ["records:read"], 150.0)
    second = TokenInfo.of_minted(mint("local", LOCAL_ADMIN_SA), "local admin", ["admin"], 200.0)
    install_local_admin(path, first)  # creates the store
    with write_transaction(writer := connect_writer(path)):
        insert_token(writer, other)
    writer.close()
    install_local_admin(path, second)
    by_id = {info.token_id: info for info in load_tokens(connect_writer(path))}
    assert by_id[first.token_id].revoked_at == 200.0
    assert by_id[other.token_id].revoked_at is None  # only the CLI's own credential is replaced
    assert by_id[second.token_id].revoked_at is None


def test_a_change_page_is_cut_by_bytes_and_counts_what_is_left(connection: apsw.Connection) -> None:
    store(connection, "th_f", 10, pad=1000)
    store(connection, "th_other", 3)
    whole = change_page(connection, "th_f", 0, 100)
    assert [r.seq for r in whole.records] == list(range(1, 11)) and not whole.has_more and whole.pending == 0
    size = len(whole.records[0].json)
    cut = change_page(connection, "th_f", 0, 100, max_bytes=size * 3 + 10)
    assert [r.seq for r in cut.records] == [1, 2, 3] and cut.has_more and cut.pending == 7
    one = change_page(connection, "th_f", 0, 100, max_bytes=1)  # a record bigger than the budget still goes
    assert [r.seq for r in one.records] == [1] and one.pending == 9
    limited = change_page(connection, "th_f", 4, 2)
    assert [r.seq for r in limited.records] == [5, 6] and limited.has_more and limited.pending == 4
    assert change_page(connection, "th_f", 10, 5).records == []
    assert count_after(connection, "th_f", 8) == 2 and count_after(connection, "th_none", 0) == 0


def test_thread_objects_reads_past_a_page(connection: apsw.Connection) -> None:
    store(connection, "th_cfg", 7)
    objects = thread_objects(connection, "th_cfg", page=3)
    assert [o["clock"] for o in objects] == list(range(7)) and all(o["thread"] == "th_cfg" for o in objects)


def test_the_registry_folds_only_this_instances_records(connection: apsw.Connection) -> None:
    state = load_writer_state(connection, OWN.did)
    candidates = []
    for signer, namespace in ((OWN, "acme"), (PEER, "evil")):
        envelope = validate_envelope(
            {
                "act": "LEARN",
                "actor": signer.did,
                "thread": REGISTRY_THREAD,
                "clock": 1,
                "body": {"kind": NAMESPACE_KIND, "namespace_id": namespace, "status": "active"},
            }
        )
        candidates.append(Candidate(envelope, signer.did, signer.sign_record_id(envelope.id)))
    commit_batch(connection, [candidates], state)
    registry = namespace_registry(connection, OWN.did)
    assert registry.is_active("acme") and not registry.is_active("evil")
    assert load_writer_state(connection, OWN.did).namespaces == registry
