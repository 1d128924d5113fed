"""The store side of federation pairs: the namespace change feed, tokens bound to a pair, schema 4.

- ``scoped_page`` against brute force: whatever the records, namespaces, filter and limits, a
  page never skips a record up to its ``scanned_to``, never serves a reserved thread, and paging
  from the start delivers exactly what the filter keeps, once each;
- a pull costs what it returns: the same SQLite work at 20,000 and at 200,000 records, through
  the partial index ``records_namespace`` and never a scan or a sort;
- tokens carry their pair, peer and expiry through the store, a pair's tokens are revoked in one
  statement, and an expired token is a 401 ``TOKEN_EXPIRED`` that says what to do;
- a schema 3 store upgrades to 4 once, and an index built for another set of reserved threads is
  rebuilt rather than silently left unused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core.errors import AuthRequired, InvalidRequest, SplError
from spl.core.reserved import RESERVED_THREADS
from spl.core.tokens import TokenInfo, mint
from spl.store import database
from spl.store.database import (
    NAMESPACE_FEED_TERM,
    SCHEMA_VERSION,
    StoreDamaged,
    check_store,
    connect_writer,
    write_transaction,
)
from spl.store.queries import MAX_FEED_NAMESPACES, ScopedPage, ScopedRow, scoped_page
from spl.store.tokens import insert_token, load_tokens, revoke_pair_tokens, revoke_token
from spl.transport.auth import TokenBook

NAMESPACES = ["default", "music", "work"]
THREADS = ["th_a", "th_b", "th_c", "th_consent", "th_federation_pairs"]  # the last two are reserved
assert RESERVED_THREADS.issuperset(THREADS[3:])


@dataclass(frozen=True)
class Row:
    seq: int
    thread: str
    namespace: str
    pad: int = 0


def stored_json(row: Row) -> str:
    return json.dumps(
        {
            "id": f"r{row.seq}",
            "sequence": row.seq,
            "thread": row.thread,
            "namespace": row.namespace,
            "pad": "x" * row.pad,
        }
    )


def add(connection: apsw.Connection, rows: list[Row]) -> None:
    """Records as the feed reads them (and their ``threads`` rows), without the writer's signing and folding."""
    with write_transaction(connection):
        for row in rows:
            connection.execute(
                "INSERT INTO records(seq, id, thread, actor, act, clock, namespace, json, created_at) "
                "VALUES (?, ?, ?, 'did:test:a', 'PUT', ?, ?, ?, 0)",
                (row.seq, f"r{row.seq}", row.thread, row.seq, row.namespace, stored_json(row)),
            )
            connection.execute(
                "INSERT INTO threads(thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at) "
                "VALUES (?, ?, 1, ?, ?, ?, 0) ON CONFLICT(thread) DO UPDATE SET "
                "record_count = record_count + 1, last_clock = excluded.last_clock, last_seq = excluded.last_seq",
                (row.thread, row.namespace, row.seq, row.seq, row.seq),
            )


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[apsw.Connection]:
    connection = connect_writer(tmp_path / "hub.db")
    yield connection
    connection.close()


# -- scoped_page against brute force ---------------------------------------------------------------


@st.composite
def stores(draw: st.DrawFn) -> list[Row]:
    count = draw(st.integers(0, 40))
    seqs = sorted(draw(st.sets(st.integers(1, 200), min_size=count, max_size=count)))
    return [
        Row(seq, draw(st.sampled_from(THREADS)), draw(st.sampled_from(NAMESPACES)), draw(st.integers(0, 40)))
        for seq in seqs
    ]


@st.composite
def feeds(draw: st.DrawFn) -> dict[str, Any]:
    """One feed's parameters: namespaces or a thread, a filter on threads, limits and a byte budget."""
    if draw(st.booleans()):
        scope: dict[str, Any] = {"namespaces": draw(st.lists(st.sampled_from(NAMESPACES), max_size=4)), "thread": None}
    else:
        scope = {"namespaces": None, "thread": draw(st.sampled_from(THREADS))}
    allowed = draw(st.none() | st.sets(st.sampled_from(THREADS)))
    return {
        **scope,
        "allowed": allowed,
        "limit": draw(st.integers(-1, 12)),
        "scan_limit": draw(st.integers(0, 20) | st.integers(0, 3)),
        "max_bytes": draw(st.sampled_from([1, 150, 400, 1 << 20])),
    }


def in_feed(row: Row, feed: dict[str, Any]) -> bool:
    if row.thread in RESERVED_THREADS:
        return False
    if feed["thread"] is not None:
        return bool(row.thread == feed["thread"])
    return row.namespace in feed["namespaces"]


def page_of(connection: apsw.Connection, feed: dict[str, Any], after: int, seen: list[int] | None) -> ScopedPage:
    """A page of ``feed``; with ``seen``, through a ``keep`` that notes each row it is shown (and keeps them all
    when the feed has no thread filter), otherwise with no ``keep`` unless the feed filters threads."""
    allowed = feed["allowed"]

    def keep(row: ScopedRow) -> bool:
        if seen is not None:
            seen.append(row.seq)
        return allowed is None or row.thread in allowed

    return scoped_page(
        connection,
        namespaces=feed["namespaces"],
        thread=feed["thread"],
        after=after,
        limit=feed["limit"],
        scan_limit=feed["scan_limit"],
        keep=keep if allowed is not None or seen is not None else None,
        max_bytes=feed["max_bytes"],
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apsw.Connection]:
    """One store for every generated example, emptied before each: a new store per example costs its fsyncs."""
    connection = connect_writer(tmp_path_factory.mktemp("scratch") / "hub.db")
    connection.execute("PRAGMA synchronous=OFF")
    yield connection
    connection.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=stores(), feed=feeds(), after=st.integers(0, 210))
def test_a_page_skips_nothing_up_to_its_cursor_and_paging_delivers_each_kept_record_once(
    scratch: apsw.Connection, rows: list[Row], feed: dict[str, Any], after: int
) -> None:
    with write_transaction(scratch):
        scratch.execute("DELETE FROM records; DELETE FROM threads")
    add(scratch, rows)
    check_feed(scratch, rows, feed, after)


def check_feed(connection: apsw.Connection, rows: list[Row], feed: dict[str, Any], after: int) -> None:
    matching = [row for row in rows if in_feed(row, feed)]
    kept = [row for row in matching if feed["allowed"] is None or row.thread in feed["allowed"]]
    limit = max(1, feed["limit"])
    scan_limit = max(limit, feed["scan_limit"])
    seen: list[int] = []
    page = page_of(connection, feed, after, seen)
    examined = [row.seq for row in matching if after < row.seq <= page.scanned_to]
    # Nothing skipped: every kept record up to the cursor is on the page, in order, with its stored JSON.
    assert [(r.seq, r.thread, r.namespace, r.json) for r in page.rows] == [
        (row.seq, row.thread, row.namespace, stored_json(row)) for row in kept if after < row.seq <= page.scanned_to
    ]
    assert seen == examined and len(examined) <= scan_limit and len(page.rows) <= limit
    assert page.head == max((row.seq for row in matching), default=0)
    assert page.has_more == any(row.seq > page.scanned_to for row in matching)
    if any(row.seq > after for row in matching):
        assert page.scanned_to > after  # a page always moves on, even when the filter keeps nothing
    else:
        assert page.scanned_to == after and page.rows == []
    # The page stopped for a reason: full, out of scan budget, out of bytes, or at the end of the feed.
    size = sum(len(r.json) for r in page.rows)
    following = [row for row in matching if row.seq > page.scanned_to]
    assert (
        len(page.rows) == limit
        or len(examined) == scan_limit
        or not following
        or (page.rows and size + len(stored_json(following[0])) > feed["max_bytes"])
    )
    # From the start, page after page: every kept record once, in order.
    delivered: list[int] = []
    cursor = 0
    for _ in range(len(rows) + 2):
        page = page_of(connection, feed, cursor, None)
        delivered.extend(r.seq for r in page.rows)
        assert page.scanned_to >= cursor
        cursor = page.scanned_to
        if not page.has_more:
            break
    assert delivered == [row.seq for row in kept] and not page.has_more


def test_a_filter_that_keeps_nothing_still_moves_the_cursor_by_at_most_scan_limit_rows(
    connection: apsw.Connection,
) -> None:
    add(connection, [Row(seq, "th_a" if seq % 10 else "th_b", "default") for seq in range(1, 101)])
    shown: list[int] = []

    def only_b(row: ScopedRow) -> bool:
        shown.append(row.seq)
        return row.thread == "th_b"

    def pull(after: int) -> ScopedPage:
        return scoped_page(
            connection, namespaces=["default"], thread=None, after=after, limit=2, scan_limit=5, keep=only_b
        )

    first = pull(0)  # rows 1-5 examined, none kept
    assert first.rows == [] and first.scanned_to == 5 and first.has_more and shown == [1, 2, 3, 4, 5]
    second = pull(5)  # rows 6-10 examined, 10 kept
    assert [r.seq for r in second.rows] == [10] and second.scanned_to == 10
    shown.clear()
    wide = scoped_page(
        connection, namespaces=["default"], thread=None, after=0, limit=2, scan_limit=100, keep=only_b
    )  # stops at the second kept row: what follows it is the next page's
    assert [r.seq for r in wide.rows] == [10, 20] and wide.scanned_to == 20 and shown == list(range(1, 21))


def test_a_reserved_thread_is_never_served_even_when_asked_for_by_name(connection: apsw.Connection) -> None:
    add(connection, [Row(1, "th_consent", "default"), Row(2, "th_a", "default"), Row(3, "th_consent", "default")])
    by_name = scoped_page(connection, namespaces=None, thread="th_consent", after=0, limit=10, scan_limit=10)
    assert by_name == ScopedPage([], False, 0, 0)
    by_namespace = scoped_page(connection, namespaces=["default"], thread=None, after=0, limit=10, scan_limit=10)
    assert [r.seq for r in by_namespace.rows] == [2] and by_namespace.head == 2 and not by_namespace.has_more


def test_a_pull_names_a_bounded_set_of_namespaces_and_exactly_one_scope(connection: apsw.Connection) -> None:
    many = [f"ns{i}" for i in range(MAX_FEED_NAMESPACES + 1)]
    with pytest.raises(InvalidRequest) as refused:
        scoped_page(connection, namespaces=many, thread=None, after=0, limit=1, scan_limit=1)
    assert refused.value.code == "TOO_MANY_NAMESPACES" and "several pulls" in refused.value.message
    duplicates = scoped_page(connection, namespaces=["a"] * 1000, thread=None, after=0, limit=1, scan_limit=1)
    assert duplicates == ScopedPage([], False, 0, 0)  # the same namespace twice is one walk
    for namespaces, thread in ((None, None), (["default"], "th_a")):
        with pytest.raises(SplError) as bug:
            scoped_page(connection, namespaces=namespaces, thread=thread, after=0, limit=1, scan_limit=1)
        assert bug.value.status == 500


def test_a_page_left_early_holds_no_read_transaction(tmp_path: Path) -> None:
    """The walks are closed when the page is done: a reader that stopped mid-walk must not pin the WAL."""
    writer = connect_writer(tmp_path / "hub.db")
    add(writer, [Row(seq, "th_a", NAMESPACES[seq % 3]) for seq in range(1, 301)])
    reader = apsw.Connection(str(tmp_path / "hub.db"), flags=apsw.SQLITE_OPEN_READONLY)
    page = scoped_page(reader, namespaces=NAMESPACES, thread=None, after=0, limit=2, scan_limit=2)
    assert [r.seq for r in page.rows] == [1, 2] and page.has_more
    add(writer, [Row(301, "th_a", "default")])
    busy, _, _ = next(writer.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    assert busy == 0
    reader.close()
    writer.close()


# -- a pull costs what it returns ------------------------------------------------------------------


def bulk_store(path: Path, count: int) -> apsw.Connection:
    """``count`` records, 1% in ``music`` and as many on a reserved thread in ``music`` (never served).

    Built in one SQL statement, without the indexes the namespace feed never reads, so that
    200,000 records take well under a second.
    """
    connection = connect_writer(path)
    connection.execute(
        "PRAGMA synchronous=OFF; DROP INDEX records_clock; DROP INDEX records_actor; DROP INDEX records_thread"
    )
    with write_transaction(connection):
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO records(seq, id, thread, actor, act, clock, namespace, json, created_at) "
            "SELECT i, 'r' || i, CASE WHEN i % 100 = 50 THEN 'th_consent' ELSE 'th_' || (i % 1000) END, "
            "'did:test:a', 'PUT', i, CASE WHEN i % 100 IN (0, 50) THEN 'music' ELSE 'default' END, "
            "'{\"sequence\":' || i || '}', 0 FROM n",
            (count,),
        )
    return connection


def measured(connection: apsw.Connection, after: int) -> tuple[ScopedPage, int]:
    """A page of ``music`` after ``after``, and the SQLite virtual-machine instructions it ran.

    Instructions count the work of a query whatever the machine and its load: a seek is one
    instruction however deep the b-tree, every row stepped over costs a few.
    """
    steps = 0

    def tick() -> bool:
        nonlocal steps
        steps += 1
        return False

    connection.set_progress_handler(tick, 1)
    try:
        page = scoped_page(connection, namespaces=["music"], thread=None, after=after, limit=100, scan_limit=100)
    finally:
        connection.set_progress_handler(None)
    return page, steps


def plan(connection: apsw.Connection, sql: str, bindings: tuple[Any, ...]) -> list[str]:
    return [str(row[3]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", bindings)]


def test_a_pull_costs_what_it_returns_at_any_store_size(tmp_path: Path) -> None:
    costs = []
    traced: list[str] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        traced.append(sql)
        return True

    for count in (20_000, 200_000):
        connection = bulk_store(tmp_path / f"hub{count}.db", count)
        after = count // 4  # part-way through a catch-up: a quarter of the store lies before the cursor
        page, cost = measured(connection, after)
        assert [r.seq for r in page.rows] == list(range(after + 100, after + 100 * 101, 100))
        assert page.head == count and page.has_more and page.scanned_to == after + 100 * 100
        costs.append(cost)
        traced.clear()
        connection.exec_trace = trace
        scoped_page(connection, namespaces=["music", "default"], thread=None, after=after, limit=10, scan_limit=10)
        connection.exec_trace = None
        assert len(traced) == 4  # a walk and a head per namespace
        for sql in traced:
            steps = plan(connection, sql, ("music", after, 10)[: sql.count("?")])
            assert len(steps) == 1 and steps[0].startswith("SEARCH records USING INDEX records_namespace (namespace=?")
            assert NAMESPACE_FEED_TERM in sql and "TEMP B-TREE" not in steps[0]
        connection.close()
    small, big = costs
    assert big <= small * 1.1, costs  # ten times the records, the same work


# -- tokens bound to a pair, with expiry -----------------------------------------------------------


def pair_token(pair_id: str | None, *, expires_at: float | None = 1000.0, created_at: float = 10.0) -> TokenInfo:
    minted = mint("local")
    return TokenInfo(
        minted.token_id,
        minted.env,
        minted.sa_id,
        f"pair {pair_id}",
        frozenset({"federation:sync", "federation:subscribe"}),
        created_at,
        expires_at=expires_at,
        pair_id=pair_id,
        peer_did="did:key:z6MkPeer" if pair_id else None,
    )


def test_a_pair_token_keeps_its_binding_through_the_store(connection: apsw.Connection) -> None:
    bound = pair_token("pair_0123456789abcdef")
    plain = TokenInfo.of_minted(mint("ci"), "ci", ["records:read"], 11.0)
    with write_transaction(connection):
        insert_token(connection, bound)
        insert_token(connection, plain)
    assert load_tokens(connection) == [bound, plain]
    wire = bound.to_wire()
    assert (wire["expires_at"], wire["pair_id"], wire["peer_did"]) == (1000.0, bound.pair_id, bound.peer_did)
    assert plain.to_wire()["expires_at"] is None and plain.to_wire()["pair_id"] is None


def test_revoking_a_pair_revokes_every_token_of_that_pair_and_no_other(connection: apsw.Connection) -> None:
    first, second = pair_token("pair_aaaaaaaaaaaaaaaa"), pair_token("pair_aaaaaaaaaaaaaaaa", created_at=12.0)
    other, plain = pair_token("pair_bbbbbbbbbbbbbbbb"), pair_token(None, expires_at=None)
    with write_transaction(connection):
        for info in (first, second, other, plain):
            insert_token(connection, info)
        assert revoke_token(connection, first.token_id, 20.0)
        assert revoke_pair_tokens(connection, "pair_aaaaaaaaaaaaaaaa", 30.0) == 1  # `second`: `first` already was
        assert revoke_pair_tokens(connection, "pair_aaaaaaaaaaaaaaaa", 40.0) == 0
        assert revoke_pair_tokens(connection, "pair_none", 40.0) == 0
    revoked = {info.token_id: info.revoked_at for info in load_tokens(connection)}
    assert revoked == {first.token_id: 20.0, second.token_id: 30.0, other.token_id: None, plain.token_id: None}
    book = TokenBook([first.revoked(20.0), second, other, plain])
    assert book.mark_pair_revoked("pair_aaaaaaaaaaaaaaaa", 30.0) == [second.token_id]
    assert {info.token_id: info.revoked_at for info in book.listing()} == revoked


def test_an_expired_token_is_refused_with_the_way_out() -> None:
    minted_pair, minted_plain = mint("local"), mint("local")
    bound = TokenInfo(
        minted_pair.token_id,
        "local",
        minted_pair.sa_id,
        "pair",
        frozenset({"federation:sync"}),
        10.0,
        expires_at=1_800_000_000.0,
        pair_id="pair_0123456789abcdef",
        peer_did="did:key:z6MkPeer",
    )
    plain = TokenInfo(minted_plain.token_id, "local", minted_plain.sa_id, "ci", frozenset({"records:read"}), 10.0)
    book = TokenBook([bound, plain])
    caller = book.authenticate(minted_pair.plaintext, now=1_799_999_999.0)
    assert caller.token == bound and caller.token.pair_id == "pair_0123456789abcdef"
    with pytest.raises(AuthRequired) as expired:
        book.authenticate(minted_pair.plaintext, now=1_800_000_000.0)
    assert expired.value.status == 401 and expired.value.code == "TOKEN_EXPIRED"
    message = expired.value.message
    assert "2027-01-15T08:00:00Z" in message and "spl federation refresh pair_0123456789abcdef" in message
    assert minted_pair.plaintext not in message and minted_pair.token_id not in message
    assert book.authenticate(minted_plain.plaintext, now=1e12).token == plain  # no expiry: never expires
    assert bound.status(now=1_800_000_000.0) == "expired" and bound.status(now=0.0) == "active"
    book.mark_revoked(bound.token_id, 20.0)
    with pytest.raises(AuthRequired) as revoked:  # revoked wins: refreshing a revoked pair would not help
        book.authenticate(minted_pair.plaintext, now=1_800_000_000.0)
    assert revoked.value.code == "TOKEN_REVOKED"
    unbound = TokenInfo(
        minted_plain.token_id, "local", minted_plain.sa_id, "ci", frozenset({"records:read"}), 10.0, expires_at=5.0
    )
    with pytest.raises(AuthRequired) as expired_plain:
        TokenBook([unbound]).authenticate(minted_plain.plaintext, now=5.0)
    assert expired_plain.value.code == "TOKEN_EXPIRED" and "spl token mint" in expired_plain.value.message


# -- schema 3 -> 4 ---------------------------------------------------------------------------------


def index_sql(connection: apsw.Connection) -> str | None:
    for (sql,) in connection.execute("SELECT sql FROM sqlite_schema WHERE name = 'records_namespace'"):
        return str(sql)
    return None


def test_a_schema_3_store_upgrades_once_and_keeps_its_tokens(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    plain = TokenInfo.of_minted(mint("ci"), "ci", ["records:read"], 10.0)
    with write_transaction(connection):
        insert_token(connection, plain)
    add(connection, [Row(1, "th_a", "default"), Row(2, "th_consent", "default"), Row(3, "th_b", "music")])
    # What schema 3 holds: the tokens table without the three columns, no namespace index.
    connection.execute(
        "DROP INDEX records_namespace; ALTER TABLE tokens DROP COLUMN expires_at; "
        "ALTER TABLE tokens DROP COLUMN pair_id; ALTER TABLE tokens DROP COLUMN peer_did; "
        "UPDATE meta SET value = '3' WHERE key = 'schema_version'"
    )
    connection.close()
    check_store(path)  # a schema 3 store passes the start-up check before it is upgraded

    reports: list[int] = []
    connection = connect_writer(path, upgrade_progress=reports.append)
    assert next(connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")) == (str(SCHEMA_VERSION),)
    assert load_tokens(connection) == [plain]  # bound to nothing, never expires
    assert index_sql(connection) is not None and NAMESPACE_FEED_TERM in str(index_sql(connection))
    page = scoped_page(connection, namespaces=["default", "music"], thread=None, after=0, limit=10, scan_limit=10)
    assert [r.seq for r in page.rows] == [1, 3]  # the index built at the upgrade holds the old records
    bound = pair_token("pair_0123456789abcdef")
    with write_transaction(connection):
        insert_token(connection, bound)
    connection.close()

    connection = connect_writer(path)  # set-up runs again; the upgrade does not
    assert load_tokens(connection) == [plain, bound]
    connection.close()
    check_store(path)


def test_an_index_built_for_other_reserved_threads_is_rebuilt(tmp_path: Path) -> None:
    """A later spl that reserves one more thread writes another WHERE; the old index would then go unused."""
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    add(connection, [Row(1, "th_a", "default"), Row(2, "th_b", "default")])
    connection.execute(
        "DROP INDEX records_namespace; "
        "CREATE INDEX records_namespace ON records(namespace, seq) WHERE thread NOT IN ('th_consent')"
    )
    connection.close()
    check_store(path)  # not the index this spl reads: not probed, not called damaged
    connection = connect_writer(path)
    assert NAMESPACE_FEED_TERM in str(index_sql(connection))
    page = scoped_page(connection, namespaces=["default"], thread=None, after=0, limit=10, scan_limit=10)
    assert [r.seq for r in page.rows] == [1, 2]
    connection.close()


def test_the_start_up_check_finds_a_record_missing_from_the_namespace_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "QUICK_CHECK_LIMIT", 0)  # quick_check would count the missing entries first
    path = tmp_path / "hub.db"
    connection = connect_writer(path)
    add(connection, [Row(seq, "th_a", "default") for seq in range(1, 65)])
    # An index that lost its entries while the rows stayed: rebuilt with a WHERE no row meets, then renamed
    # in the schema to the text spl expects (what a damaged index looks like to a reader).
    expected = index_sql(connection)
    connection.execute("DROP INDEX records_namespace")
    connection.execute(str(expected).replace("thread NOT IN", "thread IN"))
    connection.execute("PRAGMA writable_schema = ON")
    connection.execute("UPDATE sqlite_schema SET sql = ? WHERE name = 'records_namespace'", (expected,))
    connection.execute("PRAGMA writable_schema = OFF")
    connection.close()
    with pytest.raises(StoreDamaged) as damaged:
        check_store(path)
    assert "missing from records_namespace" in str(damaged.value)
