"""The writer's SQL core on a real SQLite file: opaque pair cursors and their migration, the
namespace registry folded only from this instance's own key, and parked records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from spl.core.errors import InvalidRequest, NamespaceRejected
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import validate_envelope
from spl.core.stored import Accepted, Candidate
from spl.store import ingest
from spl.store.database import SCHEMA_VERSION, connect_writer
from spl.store.ingest import IngestRequest, WriterState, commit_batch, load_writer_state, reapply_parked
from spl.store.queries import list_records, pair_cursors, parked_count, parked_dropped

OWN = Identity.generate()
OTHER = Identity.generate()


def signed(identity: Identity, payload: dict[str, Any]) -> Candidate:
    envelope = validate_envelope(payload)
    return Candidate(envelope, identity.did, identity.sign_record_id(envelope.id))


def registration(identity: Identity, namespace: str, *, status: str = "active", clock: int = 1) -> Candidate:
    body = {"kind": NAMESPACE_KIND, "namespace_id": namespace, "status": status}
    return signed(
        identity, {"act": "LEARN", "actor": identity.did, "thread": REGISTRY_THREAD, "clock": clock, "body": body}
    )


def record(identity: Identity, thread: str, clock: int, namespace: str | None = None) -> Candidate:
    body = {"namespace": namespace} if namespace else {}
    return signed(identity, {"act": "PUT", "actor": identity.did, "thread": thread, "clock": clock, "body": body})


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[apsw.Connection]:
    connection = connect_writer(tmp_path / "hub.db")
    yield connection
    connection.close()


def scalar(connection: apsw.Connection, sql: str) -> Any:
    for (value,) in connection.execute(sql):
        return value
    return None


# -- opaque cursors (spec §15.20) -------------------------------------------------------------------


def test_a_pair_cursor_is_stored_as_given_and_the_last_write_wins(connection: apsw.Connection) -> None:
    state = load_writer_state(connection, OWN.did)
    huge = str(2**64)  # an SSE id above 2^63-1: once an overflow inside the writer's transaction
    commit_batch(connection, [IngestRequest([record(OTHER, "th_c", 1)], cursor=("pair_a", huge))], state)
    assert pair_cursors(connection) == {"pair_a": huge}
    # Two pages of one pair in one batch, in order; another pair starts from "" (the start).
    commit_batch(
        connection,
        [
            IngestRequest([], cursor=("pair_a", "v2:opaque~7")),
            IngestRequest([], cursor=("pair_a", "s1.1")),
            IngestRequest([], cursor=("pair_b", "")),
        ],
        state,
    )
    # Never compared, never parsed: "s1.1" is the peer's latest word, so it stands.
    assert pair_cursors(connection) == {"pair_a": "s1.1", "pair_b": ""}


@pytest.mark.parametrize("value", ["x" * 257, "tab\there", "caf\u00e9", "line\n", 5, 2**64, None])
def test_a_cursor_out_of_bounds_is_refused_before_anything_is_written(connection: apsw.Connection, value: Any) -> None:
    state = load_writer_state(connection, OWN.did)
    with pytest.raises(InvalidRequest) as refused:
        commit_batch(connection, [IngestRequest([record(OTHER, "th_c", 1)], cursor=("pair_a", value))], state)
    assert refused.value.code == "INVALID_CURSOR"
    assert list_records(connection) == [] and pair_cursors(connection) == {}
    assert not connection.in_transaction


def test_integer_sync_cursors_become_opaque_pair_cursors_once(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    # Turn it back into a version-1 store: the INTEGER table, no pair_cursors.
    connection.execute(
        "DROP TABLE pair_cursors; "
        "CREATE TABLE sync_cursors (pair_id TEXT PRIMARY KEY, cursor INTEGER NOT NULL, updated_at REAL NOT NULL); "
        "INSERT INTO sync_cursors VALUES ('pair_zero', 0, 1.0), ('pair_n', 42, 2.0), "
        "('pair_max', 9223372036854775807, 3.0); "
        "UPDATE meta SET value = '1' WHERE key = 'schema_version'"
    )
    connection.close()

    connection = connect_writer(path)
    assert pair_cursors(connection) == {"pair_zero": "", "pair_n": "s1.42", "pair_max": "s1.9223372036854775807"}
    assert scalar(connection, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'sync_cursors'") == 0
    assert scalar(connection, "SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION) == "5"
    state = load_writer_state(connection, OWN.did)
    commit_batch(connection, [IngestRequest([], cursor=("pair_n", "s1.50"))], state)
    connection.close()

    connection = connect_writer(path)  # set-up runs again; the migration does not
    assert pair_cursors(connection)["pair_n"] == "s1.50"
    connection.close()


# -- the namespace registry folds only this instance's own records (spec §15.18) ---------------------


def test_the_registry_changes_only_for_records_signed_by_this_instance(connection: apsw.Connection) -> None:
    state = load_writer_state(connection, OWN.did)
    ((foreign,),) = commit_batch(connection, [[registration(OTHER, "acme")]], state)
    assert isinstance(foreign, Accepted) and foreign.created  # stored as data ...
    assert not state.namespaces.is_active("acme") and state.registry_changes == 0  # ... never configuration
    ((refused,),) = commit_batch(connection, [[record(OTHER, "th_a", 1, "acme")]], state)
    assert isinstance(refused, NamespaceRejected)

    commit_batch(connection, [[registration(OWN, "acme")]], state)
    assert state.namespaces.is_active("acme") and state.registry_changes == 1
    ((accepted,),) = commit_batch(connection, [[record(OTHER, "th_a", 1, "acme")]], state)
    assert isinstance(accepted, Accepted) and accepted.created

    # Someone else archiving it is ignored in memory and when the state is rebuilt from disk.
    commit_batch(connection, [[registration(OTHER, "acme", status="archived", clock=2)]], state)
    assert state.namespaces.is_active("acme") and state.registry_changes == 1
    assert load_writer_state(connection, OWN.did).namespaces.is_active("acme")
    # The same store seen with another key: only that key's records count.
    assert not load_writer_state(connection, OTHER.did).namespaces.is_active("acme")


# -- parking ---------------------------------------------------------------------------------------


def test_a_record_refused_for_its_namespace_is_parked_and_applied_once_registered(connection: apsw.Connection) -> None:
    state = load_writer_state(connection, OWN.did)
    pulled = record(OTHER, "th_lab", 7, "lab")
    nested = record(OTHER, "th_lab", 8, "lab/deep")
    ((first, second),) = commit_batch(connection, [IngestRequest([pulled, nested], park_origin="pair_x")], state)
    assert isinstance(first, NamespaceRejected) and "parked" in first.message
    assert isinstance(second, NamespaceRejected)
    ((again,),) = commit_batch(connection, [IngestRequest([pulled], park_origin="push")], state)
    assert isinstance(again, NamespaceRejected)
    assert parked_count(connection) == state.parked == 2  # parked once per record id
    ((emitted,),) = commit_batch(connection, [[record(OTHER, "th_lab", 9, "lab")]], state)
    assert isinstance(emitted, NamespaceRejected) and parked_count(connection) == 2  # not asked to park

    assert reapply_parked(connection, state).created == []  # nothing is accepted yet
    commit_batch(connection, [[registration(OWN, "lab")]], state)
    result = reapply_parked(connection, state)
    assert [r.id for r in result.created] == [pulled.envelope.id] and not result.more
    stored = list_records(connection, thread="th_lab")
    assert [r.id for r in stored] == [pulled.envelope.id]
    assert f'"signer":"{OTHER.did}"' in stored[0].json and f'"sig":"{pulled.sig}"' in stored[0].json
    # "lab/deep" is still not registered: that one waits.
    assert parked_count(connection) == state.parked == 1
    assert reapply_parked(connection, state).created == []
    # Registered, and the same record arrives again by another path before the re-application:
    # the parked copy is settled as a duplicate, never stored twice.
    commit_batch(connection, [[registration(OWN, "lab/deep", clock=2)]], state)
    ((direct,),) = commit_batch(connection, [[nested]], state)
    assert isinstance(direct, Accepted) and direct.created
    result = reapply_parked(connection, state)
    assert result.created == [] and result.duplicates == 1
    assert [r.id for r in list_records(connection, thread="th_lab")] == [pulled.envelope.id, nested.envelope.id]
    assert parked_count(connection) == 0
    assert load_writer_state(connection, OWN.did).parked == 0


def test_reapplying_goes_a_page_at_a_time(connection: apsw.Connection) -> None:
    state = load_writer_state(connection, OWN.did)
    batch = [record(OTHER, "th_many", clock, "many") for clock in range(1, 6)]
    commit_batch(connection, [IngestRequest(batch, park_origin="push")], state)
    commit_batch(connection, [[registration(OWN, "many")]], state)
    pages = []
    while True:
        result = reapply_parked(connection, state, limit=2)
        pages.append(len(result.created))
        if not result.more:
            break
    assert sum(pages) == 5 and max(pages) == 2
    assert [r.id for r in list_records(connection, thread="th_many")] == [c.envelope.id for c in batch]


def test_parking_is_bounded_and_what_does_not_fit_is_counted(
    connection: apsw.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "MAX_PARKED", 2)
    state = load_writer_state(connection, OWN.did)
    batch = [record(OTHER, "th_b", clock, "lab") for clock in range(1, 5)]
    ((*parked, dropped),) = commit_batch(connection, [IngestRequest(batch, park_origin="push")], state)
    assert all(isinstance(o, NamespaceRejected) for o in (*parked, dropped))
    assert isinstance(dropped, NamespaceRejected) and "not parked" in dropped.message
    assert parked_count(connection) == 2 and parked_dropped(connection) == 2
    commit_batch(connection, [IngestRequest([record(OTHER, "th_b", 9, "lab")], park_origin="push")], state)
    assert parked_dropped(connection) == 3  # kept across transactions (and restarts)


def test_parking_is_bounded_in_bytes_too(connection: apsw.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    state = load_writer_state(connection, OWN.did)
    commit_batch(connection, [IngestRequest([record(OTHER, "th_b", 1, "lab")], park_origin="push")], state)
    size = int(scalar(connection, "SELECT size FROM parked_records"))
    assert state.parked_bytes == size == load_writer_state(connection, OWN.did).parked_bytes
    monkeypatch.setattr(ingest, "MAX_PARKED_BYTES", size * 2)
    batch = [record(OTHER, "th_b", clock, "lab") for clock in range(2, 5)]
    commit_batch(connection, [IngestRequest(batch, park_origin="push")], state)
    assert parked_count(connection) == 2 and parked_dropped(connection) == 2
    commit_batch(connection, [[registration(OWN, "lab")]], state)
    reapply_parked(connection, state)
    assert state.parked == state.parked_bytes == 0


def test_writer_state_is_rebuilt_with_the_parked_count(connection: apsw.Connection) -> None:
    state = WriterState(OWN.did)
    commit_batch(connection, [IngestRequest([record(OTHER, "th_s", 1, "x")], park_origin="pair_y")], state)
    assert load_writer_state(connection, OWN.did).parked == 1
    assert scalar(connection, "SELECT origin FROM parked_records") == "pair_y"
