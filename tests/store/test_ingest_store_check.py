"""``check_store``: the start-up check refuses a damaged ``hub.db`` with one line, and stays cheap."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.store import database as store
from spl.store.database import StoreDamaged, check_store, connect_writer
from spl.store.ingest import commit_batch, load_writer_state

IDENTITY = Identity.generate()
PAGE = 4096


def build_store(path: Path, records: int = 2000) -> None:
    connection = connect_writer(path)
    state = load_writer_state(connection, IDENTITY.did)
    batch = []
    for clock in range(1, records + 1):
        envelope = validate_envelope(
            {
                "act": "PUT",
                "actor": f"did:test:{clock % 7}",
                "thread": f"th_{clock % 13}",
                "clock": clock,
                "body": {"pad": "p" * 200},
            }
        )
        batch.append(Candidate(envelope, IDENTITY.did, IDENTITY.sign_record_id(envelope.id)))
    commit_batch(connection, [batch], state)
    connection.close()  # the last connection checkpoints the WAL into hub.db


def pages_of(path: Path, name: str, kind: str) -> list[int]:
    connection = apsw.Connection(str(path))
    try:
        rows = connection.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ? ORDER BY pageno", (name, kind)
        )
        return [int(page) for (page,) in rows]
    finally:
        connection.close()


def root_page(path: Path, name: str) -> int:
    connection = apsw.Connection(str(path))
    try:
        for (page,) in connection.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (name,)):
            return int(page)
        raise AssertionError(name)
    finally:
        connection.close()


def scribble(path: Path, page: int) -> None:
    """Overwrite one whole page (1-based) with a pattern no b-tree page can have."""
    with path.open("r+b") as file:
        file.seek((page - 1) * PAGE)
        file.write(bytes([0xA5]) * PAGE)


def refused(path: Path) -> str:
    with pytest.raises(StoreDamaged) as caught:
        check_store(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_healthy_store_passes_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hub.db"
    build_store(path)
    check_store(path)  # small: PRAGMA quick_check
    monkeypatch.setattr(store, "QUICK_CHECK_LIMIT", 0)
    check_store(path)  # as if it were large: sampled probes


def test_missing_empty_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    assert "does not exist" in refused(path)
    path.write_bytes(b"")
    assert "is empty" in refused(path)
    path.write_bytes(b"not a database at all, just text" * 200)
    assert "not a SQLite database" in refused(path)
    path.unlink()
    path.mkdir()
    assert "cannot be read" in refused(path)


def test_a_header_or_length_that_is_wrong_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    build_store(path, records=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert "truncated" in refused(path)
    path.write_bytes(b"\0" * 16 + data[16:])
    assert "bad header" in refused(path)


def test_a_damaged_leaf_is_caught_by_quick_check_on_a_small_store(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    build_store(path)
    leaves = pages_of(path, "records", "leaf")
    scribble(path, leaves[len(leaves) // 2])
    assert "restore" in refused(path)


@pytest.mark.parametrize("btree", ["records", "records_thread", "records_actor", "records_clock", "threads"])
def test_a_damaged_root_is_caught_by_the_sampled_check_of_a_large_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, btree: str
) -> None:
    monkeypatch.setattr(store, "QUICK_CHECK_LIMIT", 0)
    path = tmp_path / "hub.db"
    build_store(path)
    scribble(path, root_page(path, btree))
    assert "restore" in refused(path)


def test_the_sampled_check_catches_an_index_that_lost_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed b-trees that disagree, in a store too large for quick_check."""
    monkeypatch.setattr(store, "QUICK_CHECK_LIMIT", 0)
    path = tmp_path / "hub.db"
    build_store(path)
    connection = apsw.Connection(str(path))
    # Build an index over every other row, then swap root pages so records_actor *is* that index.
    connection.execute(
        "CREATE TABLE scratch AS SELECT * FROM records WHERE seq % 2 = 1; "
        "CREATE INDEX scratch_actor ON scratch(actor, seq);"
    )
    roots = dict(connection.execute("SELECT name, rootpage FROM sqlite_schema WHERE name LIKE '%_actor'"))
    connection.execute("PRAGMA writable_schema = ON")
    for name, other in (("records_actor", "scratch_actor"), ("scratch_actor", "records_actor")):
        connection.execute("UPDATE sqlite_schema SET rootpage = ? WHERE name = ?", (roots[other], name))
    connection.close()
    assert "missing from records_actor" in refused(path)


def test_the_sampled_check_catches_a_row_that_does_not_match_its_json(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    build_store(path, records=64)
    connection = apsw.Connection(str(path))
    connection.execute("UPDATE records SET json = replace(json, '\"sequence\":', '\"sequence\":1') WHERE seq = 1")
    connection.close()
    assert "does not match its stored JSON" in refused(path)


def test_a_store_written_by_a_newer_spl_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.close()
    assert "newer spl" in refused(path)


def test_a_version_1_store_passes_before_its_migration(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    connection.execute(
        "DROP TABLE pair_cursors; "
        "CREATE TABLE sync_cursors (pair_id TEXT PRIMARY KEY, cursor INTEGER NOT NULL, updated_at REAL NOT NULL); "
        "UPDATE meta SET value = '1' WHERE key = 'schema_version'"
    )
    connection.close()
    check_store(path)
