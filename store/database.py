"""The record store: one SQLite file (apsw, WAL, ``synchronous=FULL``).

Everything here is synchronous and owns no threads: the store-writer actor calls the
write side through ``trio.to_thread.run_sync`` on its single write connection, and
readers use :class:`ReadPool` connections the same way. A record's stored JSON is the
exact ASCII-only object served on every read path (HTTP lists, SSE, federation), so
reads splice text instead of re-encoding.

Storage failures are translated here, once, into the caller-facing errors of
``spl.core.errors`` (:func:`storage_error`): a damaged page is ``STORE_CORRUPT`` and a
full disk (or the ``[store] max_bytes`` cap) is ``STORAGE_FULL``. The request that met
it fails; no actor dies of it and no request waits forever.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from spl.core.errors import SplError, StorageFull, StoreCorrupt
from spl.core.reserved import RESERVED_THREADS
from spl.store.threads import rebuild_threads

__all__ = [
    "NAMESPACE_FEED_TERM",
    "SCHEMA_VERSION",
    "ReadPool",
    "StoreDamaged",
    "check_store",
    "connect_reader",
    "connect_writer",
    "storage_error",
    "write_transaction",
]

log = logging.getLogger("spl.store")

_REPORT_EVERY = 60.0  # seconds between two log lines about failed reads

# 1: the first layout. 2: peer cursors are opaque strings (spec §15.20: ``pair_cursors``
# replaces the INTEGER ``sync_cursors``) and records refused for a reason that can change
# wait in ``parked_records``. 3: per-thread projections kept at commit (``spl.store.threads``): each
# record's ``ordinal`` in its thread, the fold's head on ``threads``, ``thread_participants`` and
# ``clock_marks`` — rebuilt from the records once when an older store is opened. 4: federation pairs
# (docs/federation-pairs.md): a token may be bound to a pair and a peer and expire (three nullable
# ``tokens`` columns), and the namespace change feed walks the partial index ``records_namespace``.
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    thread     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    act        TEXT NOT NULL,
    clock      INTEGER NOT NULL,
    namespace  TEXT NOT NULL,
    json       TEXT NOT NULL,
    created_at REAL NOT NULL,
    ordinal    INTEGER NOT NULL DEFAULT 0  -- position in its thread, from 1
);
CREATE UNIQUE INDEX IF NOT EXISTS records_clock ON records(thread, actor, clock);
CREATE INDEX IF NOT EXISTS records_thread ON records(thread, seq);
CREATE INDEX IF NOT EXISTS records_actor ON records(actor, seq);
CREATE TABLE IF NOT EXISTS threads (
    thread       TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    last_clock   INTEGER NOT NULL,
    first_seq    INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL,
    updated_at   REAL NOT NULL,
    state        TEXT NOT NULL DEFAULT 'unopened',  -- the fold's head (spl.core.fold.FoldHead)
    opened_by    TEXT,
    closed_by    TEXT
);
-- GET /v1/threads: most recently written first, paged by last_seq (unique: a sequence belongs to one thread).
CREATE INDEX IF NOT EXISTS threads_recent ON threads(last_seq);
CREATE INDEX IF NOT EXISTS threads_namespace_recent ON threads(namespace, last_seq);
CREATE TABLE IF NOT EXISTS thread_participants (
    thread       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    role_rank    INTEGER NOT NULL,  -- spl.core.fold.ROLE_RANK
    PRIMARY KEY (thread, actor)
) WITHOUT ROWID;
-- since=<clock> reads: every MARK_EVERY-th record of a thread, the highest clock up to it.
CREATE TABLE IF NOT EXISTS clock_marks (
    thread TEXT NOT NULL,
    clock  INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (thread, clock, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pair_cursors (
    pair_id    TEXT PRIMARY KEY,
    cursor     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS parked_records (
    id         TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    origin     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    json       TEXT NOT NULL,
    parked_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS parked_namespace ON parked_records(namespace);
CREATE TABLE IF NOT EXISTS tokens (
    token_id   TEXT PRIMARY KEY,
    env        TEXT NOT NULL,
    sa_id      TEXT NOT NULL,
    label      TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    expires_at REAL,  -- NULL: never expires (operator tokens); a federation pair's token: 90 days
    pair_id    TEXT,  -- the federation pair the token was minted for, NULL for every other token
    peer_did   TEXT,  -- the peer it was minted for (NULL likewise)
    target_namespace TEXT  -- a token bound to the consent filter: its pulls land in this namespace
);
-- Tasks (spl.core.tasks): the task fold's output per task thread, kept in the commit like the thread rows.
CREATE TABLE IF NOT EXISTS tasks (
    thread      TEXT PRIMARY KEY,
    alias       TEXT NOT NULL,
    alias_number INTEGER,  -- N of an allocated alias TASK-N (NULL for a chosen one): the next is MAX + 1
    status      TEXT NOT NULL,
    assignee    TEXT,
    opened_seq  INTEGER NOT NULL,  -- the opening INTEND's sequence: list order and paging key
    updated_seq INTEGER NOT NULL,
    head        TEXT NOT NULL  -- JSON of spl.core.tasks.TaskHead
);
CREATE INDEX IF NOT EXISTS tasks_recent ON tasks(opened_seq);
CREATE INDEX IF NOT EXISTS tasks_alias ON tasks(alias, opened_seq);
CREATE INDEX IF NOT EXISTS tasks_alias_number ON tasks(alias_number) WHERE alias_number IS NOT NULL;
-- GET /v1/actors/{did}: one actor's participation without a walk of every thread's participants.
CREATE INDEX IF NOT EXISTS participants_actor ON thread_participants(actor);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status, opened_seq);
CREATE INDEX IF NOT EXISTS tasks_assignee ON tasks(assignee, opened_seq);
CREATE TABLE IF NOT EXISTS task_labels (
    label      TEXT NOT NULL,
    opened_seq INTEGER NOT NULL,
    thread     TEXT NOT NULL,
    PRIMARY KEY (label, opened_seq, thread)
) WITHOUT ROWID;
-- Sub-threads (seed 003 "Fork and merge"): a parent INTEND naming body.sub_thread links the child.
CREATE TABLE IF NOT EXISTS sub_threads (
    parent      TEXT NOT NULL,
    child       TEXT NOT NULL,
    fork_record TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    namespace   TEXT NOT NULL,  -- the parent's: a child's close is synthesised only into parents of its own
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sub_threads_child ON sub_threads(child, namespace, seq);
-- The join predicate of a parent: body.join of its latest INTEND that carries one (raw JSON, parsed by the joiner).
CREATE TABLE IF NOT EXISTS thread_joins (
    parent    TEXT PRIMARY KEY,
    join_spec TEXT NOT NULL,
    intend    TEXT NOT NULL
);
-- Child closes waiting for their synthesising record on the parent (the joiner's outbox). A row is written
-- in the transaction that closes the child and deleted in the one that stores the synthesis: exactly once.
CREATE TABLE IF NOT EXISTS join_outbox (
    queued_seq INTEGER PRIMARY KEY,  -- the closing record's sequence (or the fork's, for a child closed first)
    parent     TEXT NOT NULL,
    child      TEXT NOT NULL,
    closer     TEXT NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS join_outbox_key ON join_outbox(parent, child, closer);
-- Each child's latest synthesised outcome on its parent: what the join predicate is decided over.
CREATE TABLE IF NOT EXISTS child_outcomes (
    parent    TEXT NOT NULL,
    child     TEXT NOT NULL,
    closer    TEXT NOT NULL,
    status    TEXT NOT NULL,
    result    TEXT,
    synthesis TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
"""

# The namespace change feed (``spl.store.queries.scoped_page``) walks this index. Reserved threads are
# never served on a feed (spec §15.18, ``spl.core.reserved``), so they are left out of it: a pull never
# steps over them, and a query uses the index only when it repeats ``NAMESPACE_FEED_TERM`` word for word
# (SQLite matches a partial index's WHERE to the query's terms textually). Sorted, so the text is stable.
NAMESPACE_FEED_TERM = "thread NOT IN ({})".format(
    ", ".join("'" + thread.replace("'", "''") + "'" for thread in sorted(RESERVED_THREADS))
)
_NAMESPACE_INDEX = f"CREATE INDEX records_namespace ON records(namespace, seq) WHERE {NAMESPACE_FEED_TERM}"


@contextmanager
def write_transaction(connection: apsw.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception (which propagates).

    IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a
    lock upgrade; every write in spl goes through here.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _configure(connection: apsw.Connection) -> None:
    connection.setbusytimeout(10_000)
    connection.execute("PRAGMA foreign_keys=ON")


def connect_writer(
    path: Path,
    *,
    max_bytes: int = 0,
    upgrade_progress: Callable[[int], None] | None = None,
    own_did: str | None = None,
) -> apsw.Connection:
    """The single write connection: WAL, ``synchronous=FULL`` (ack only after a durable COMMIT).

    ``max_bytes`` > 0 caps the database (``PRAGMA max_page_count``): a write that would grow
    it further fails with SQLITE_FULL, which the writer answers as 503 ``STORAGE_FULL``.
    A cap below the current size holds the store at its current size (SQLite never lowers
    ``max_page_count`` below the pages in use). Opening a store from an older spl upgrades
    it first; ``upgrade_progress`` hears how many records a long upgrade has folded so far, and
    ``own_did`` (the daemon passes it) tells the re-fold which records this instance signed.
    """
    connection = apsw.Connection(str(path))
    try:
        _configure(connection)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        _set_up_schema(connection, upgrade_progress, own_did)
        if max_bytes > 0:
            page_size = _scalar(connection, "PRAGMA page_size")
            connection.execute(f"PRAGMA max_page_count={max(1, max_bytes // page_size)}")
    except BaseException:
        connection.close()
        raise
    return connection


def _scalar(connection: apsw.Connection, sql: str, bindings: Sequence[Any] = ()) -> Any:
    for (value,) in connection.execute(sql, bindings):
        return value
    return None


def _set_up_schema(
    connection: apsw.Connection, progress: Callable[[int], None] | None = None, own_did: str | None = None
) -> None:
    """Create the tables of a new store, or bring an older one up to ``SCHEMA_VERSION``, in one transaction.

    Version 3 → 4 adds the token columns; the namespace index is checked on every open (see
    :func:`_ensure_namespace_index`). Each step checks what is already there, so a step that
    ran before (or a store created by this spl) is left as it is.

    Version 1 → 2 moves every ``sync_cursors`` row (an INTEGER source sequence ``n``) to
    ``pair_cursors`` as the opaque cursor the peer would have issued for it (``s1.<n>``,
    or ``""`` for 0) and drops the old table, so the move happens once.
    """
    with write_transaction(connection):
        has_meta = _scalar(connection, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'")
        version = _scalar(connection, "SELECT value FROM meta WHERE key = 'schema_version'") if has_meta else None
        connection.execute(_SCHEMA)
        if version is not None and int(version) < 2:
            old = _scalar(
                connection, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sync_cursors'"
            )
            if old:
                connection.execute(
                    "INSERT INTO pair_cursors(pair_id, cursor, updated_at) "
                    "SELECT pair_id, CASE WHEN CAST(cursor AS INTEGER) <= 0 THEN '' "
                    "ELSE 's1.' || CAST(cursor AS INTEGER) END, updated_at FROM sync_cursors WHERE true "
                    "ON CONFLICT(pair_id) DO NOTHING"
                )
                connection.execute("DROP TABLE sync_cursors")
        if version is not None and int(version) < 3:
            _upgrade_to_3(connection, progress, own_did)
        if version is not None and int(version) < 4:
            _upgrade_to_4(connection)
        if version is not None and 3 <= int(version) < 5:  # below 3, _upgrade_to_3 folded with today's rules
            _upgrade_to_5(connection, progress, own_did)
        _ensure_namespace_index(connection, progress)
        if version is None or int(version) < SCHEMA_VERSION:
            connection.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )


def _upgrade_to_3(connection: apsw.Connection, progress: Callable[[int], None] | None, own_did: str | None) -> None:
    """Add the per-thread projection columns and fill every projection from the records (once)."""
    for table, column, definition in (
        ("records", "ordinal", "INTEGER NOT NULL DEFAULT 0"),
        ("threads", "state", "TEXT NOT NULL DEFAULT 'unopened'"),
        ("threads", "opened_by", "TEXT"),
        ("threads", "closed_by", "TEXT"),
    ):
        if not any(row[1] == column for row in connection.execute(f"PRAGMA table_info({table})")):
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    started = time.monotonic()
    log.info("upgrading the store to schema 3: folding every thread once (a big store takes a while)")
    records = rebuild_threads(connection, progress, own_did)
    log.info("store upgraded: %d records folded in %.1f s", records, time.monotonic() - started)


def _upgrade_to_4(connection: apsw.Connection) -> None:
    """Bind tokens to federation pairs: three nullable columns, NULL for every token that exists (bound to nothing)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(tokens)")}
    for column, definition in (
        ("expires_at", "REAL"),
        ("pair_id", "TEXT"),
        ("peer_did", "TEXT"),
        ("target_namespace", "TEXT"),
    ):
        if column not in present:
            connection.execute(f"ALTER TABLE tokens ADD COLUMN {column} {definition}")


def _upgrade_to_5(connection: apsw.Connection, progress: Callable[[int], None] | None, own_did: str | None) -> None:
    """Tasks, sub-threads, joins and the adapter role (issue 12): fold every thread once more.

    The new tables were created by the schema script; the role ranks changed (adapter slots in
    below reviewer) and the unopened state was renamed, so every projection is recomputed.
    """
    started = time.monotonic()
    log.info("upgrading the store to schema 5: folding every thread and task once (a big store takes a while)")
    records = rebuild_threads(connection, progress, own_did)
    log.info("store upgraded: %d records folded in %.1f s", records, time.monotonic() - started)


_PROGRESS_STEPS = 1_000_000  # SQLite VM steps between two progress reports while the index builds


def _ensure_namespace_index(connection: apsw.Connection, progress: Callable[[int], None] | None) -> None:
    """Create ``records_namespace``, or rebuild it when it was built for another set of reserved threads.

    The index's WHERE is written from :data:`RESERVED_THREADS`; a later spl that reserves one
    more thread writes a different term, which the old index would not match, and every pull
    would silently fall back to a scan. Comparing the stored DDL on each open costs one read of
    ``sqlite_schema``; the rebuild (a pass over the records, about as long as building any index
    on them) happens only when the set changed. ``progress`` hears 0 now and then meanwhile, so
    a daemon's start-up report keeps systemd from timing the build out.
    """
    stored = _scalar(connection, "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'records_namespace'")
    if stored == _NAMESPACE_INDEX:
        return
    if stored is not None:
        connection.execute("DROP INDEX records_namespace")
    if _scalar(connection, "SELECT seq FROM records LIMIT 1") is None:
        connection.execute(_NAMESPACE_INDEX)  # a new (or empty) store: nothing to index, nothing to say
        return
    started = time.monotonic()
    log.info("building the index of the namespace change feed (a big store takes a while)")
    if progress is not None:
        report = progress

        def tick() -> bool:
            report(0)
            return False  # never abort the build

        connection.set_progress_handler(tick, _PROGRESS_STEPS)
    try:
        connection.execute(_NAMESPACE_INDEX)
    finally:
        if progress is not None:
            connection.set_progress_handler(None)
    log.info("namespace feed index built in %.1f s", time.monotonic() - started)


def connect_reader(path: Path) -> apsw.Connection:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    _configure(connection)
    return connection


class ReadPool:
    """A small pool of read-only connections; each is used by one thread at a time."""

    def __init__(self, path: Path, size: int = 4) -> None:
        self._path = path
        self._idle: list[apsw.Connection] = []
        self._lock = threading.Lock()
        self._size = size
        self._failed_reads = 0
        self._last_report = -math.inf

    @contextmanager
    def connection(self) -> Iterator[apsw.Connection]:
        """A read connection for one thread; a storage failure inside the block becomes an ``SplError``.

        Every read path (HTTP routes, folds, federation) goes through here, so this is the one
        place where ``apsw.CorruptError`` turns into 500 ``STORE_CORRUPT`` for that request
        alone. A connection that met a damaged page is closed rather than pooled: its page
        cache is not trusted any more.
        """
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        try:
            if connection is None:
                connection = connect_reader(self._path)
            yield connection
        except Exception as exc:
            failure = storage_error(exc)
            if failure is None:
                raise
            if connection is not None:
                connection.close()
                connection = None
            self._report(exc)
            raise failure from exc
        finally:
            self._give_back(connection)

    def _report(self, exc: Exception) -> None:
        """Log a failed read: the first at once, then one line per minute with the count in between.

        Every request that meets the damaged page fails the same way; a line each would let a
        client fill the log by repeating one GET.
        """
        now = time.monotonic()  # throttling a log in a worker thread: not a timer, no trio clock here
        with self._lock:
            self._failed_reads += 1
            if now - self._last_report < _REPORT_EVERY:
                return
            count, self._failed_reads, self._last_report = self._failed_reads, 0, now
        log.error("store read failed (%d since the last report): %s: %s", count, type(exc).__name__, exc)

    def _give_back(self, connection: apsw.Connection | None) -> None:
        if connection is None:
            return
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


# -- storage failures ---------------------------------------------------------------------

FULL_MESSAGE = (
    "the store is full: nothing from this request was stored. Free disk space on the volume that holds "
    "hub.db, or raise [store] max_bytes in config.toml (0 = no cap) and restart spl; reads keep working meanwhile"
)
CORRUPT_MESSAGE = (
    "the store (hub.db) is damaged where this request needed to read: stop the daemon, run `spl doctor`, "
    "and restore hub.db from a backup"
)
_LOW_SPACE = 1 << 20  # an I/O error on a volume with less free than this is a full disk


def storage_error(exc: BaseException, *, volume: Path | None = None) -> SplError | None:
    """The caller-facing error for a storage failure, or None when ``exc`` is something else.

    ``volume`` (a directory on the store's filesystem) lets an ``apsw.IOError`` count as a
    full disk when that filesystem has no room left: SQLite reports ENOSPC as SQLITE_FULL
    on data writes, but growing the WAL index (``-shm``) on a full volume comes back as
    SQLITE_IOERR_SHMSIZE.
    """
    if isinstance(exc, apsw.FullError) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return StorageFull(FULL_MESSAGE)
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return StoreCorrupt(CORRUPT_MESSAGE)
    if isinstance(exc, apsw.IOError) and volume is not None:
        import shutil

        try:
            if shutil.disk_usage(volume).free < _LOW_SPACE:
                return StorageFull(FULL_MESSAGE)
        except OSError:
            return None
    return None


# -- the start-up check -------------------------------------------------------------------

_MAGIC = b"SQLite format 3\x00"
_SAMPLES = 64  # records probed across the sequence range; each probe is a few page reads per b-tree
# Up to this size a full PRAGMA quick_check runs at start: about 0.3 s with a cold cache at 16 MiB
# (measured: 0.37 s at 19 MB, 1.5 s at 95 MB, 69 s at 3 GB, where the sampled probes take 0.05 s).
QUICK_CHECK_LIMIT = 16 << 20
_TABLES = ("meta", "records", "threads", "pair_cursors", "tokens")


class StoreDamaged(Exception):
    """``check_store`` refused the store; ``str()`` is one line naming the file and what to do."""


def check_store(path: Path) -> None:
    """A start-up check of ``hub.db`` whose cost does not grow with the store (beyond 16 MiB).

    What it checks, cheapest first:

    1. the file exists, is not empty, starts with the SQLite magic, its page size is legal
       and its length a whole number of pages (a truncated or overwritten file);
    2. SQLite opens it (replaying a WAL left by a crash) and reads the schema; the tables
       spl needs exist and ``meta.schema_version`` is not newer than this spl;
    3. up to ``QUICK_CHECK_LIMIT`` (16 MiB): ``PRAGMA quick_check`` — every page is read,
       about 0.3 s with a cold cache at that size; above it a full scan would take minutes (about
       70 s at 3 GB), so it is skipped;
    4. at any size: ``MIN``/``MAX(seq)`` and 64 records spread evenly over the sequence
       range, each read through the table and looked up again through every index (id,
       thread, actor, (thread, actor, clock), and (namespace, seq) for a record the namespace
       feed serves) and its ``threads`` row, and its JSON decoded
       and matched to its columns. That walks the root and interior pages of every b-tree
       and a sample of leaves, a few hundred page reads whatever the size, and it catches
       index entries that disagree with their rows (``quick_check`` only counts them).

    A damaged leaf the sample misses is not caught here; the read that meets it later fails
    alone with ``STORE_CORRUPT`` (see :meth:`ReadPool.connection`).

    Raises:
        StoreDamaged: one line: the file, what is wrong, and the fix.
    """
    fix = "restore hub.db from a backup (see `spl doctor`)"
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header = file.read(100)
    except FileNotFoundError:
        raise StoreDamaged(f"{path} does not exist; {fix}, or move the home aside to start empty") from None
    except OSError as exc:
        raise StoreDamaged(f"{path} cannot be read ({exc.strerror}); check its owner and mode (`spl doctor`)") from None
    if size == 0:
        raise StoreDamaged(f"{path} is empty; {fix}, or move the home aside to start empty")
    if len(header) < 100 or header[:16] != _MAGIC:
        raise StoreDamaged(f"{path} is not a SQLite database (bad header); {fix}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StoreDamaged(f"{path} has an invalid page size in its header; {fix}")
    if size % page_size:
        raise StoreDamaged(f"{path} is truncated ({size} bytes is not a whole number of {page_size}-byte pages); {fix}")
    connection: apsw.Connection | None = None
    try:
        connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        _configure(connection)
        _check_schema(connection, path)
        if size <= QUICK_CHECK_LIMIT:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(1)")]
            if problems != ["ok"]:
                raise StoreDamaged(f"{path} failed quick_check ({_one_line(problems[0])}); {fix}")
        _probe_records(connection, path)  # quick_check counts index entries but does not match them to rows
    except apsw.Error as exc:
        raise StoreDamaged(f"{path} is damaged ({type(exc).__name__}: {_one_line(exc)}); {fix}") from None
    finally:
        if connection is not None:
            connection.close()


def _one_line(text: object, limit: int = 120) -> str:
    return " ".join(str(text).split())[:limit]


def _check_schema(connection: apsw.Connection, path: Path) -> None:
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    missing = [
        table for table in _TABLES if table not in tables and not (table == "pair_cursors" and "sync_cursors" in tables)
    ]
    if missing:
        raise StoreDamaged(
            f"{path} is not an spl store (missing tables: {', '.join(missing)}); restore it from a backup"
        )
    version = _scalar(connection, "SELECT value FROM meta WHERE key = 'schema_version'")
    if version is None or not str(version).isdigit():
        raise StoreDamaged(f"{path} has no schema version; restore hub.db from a backup (see `spl doctor`)")
    if int(version) > SCHEMA_VERSION:
        raise StoreDamaged(
            f"{path} was written by a newer spl (schema {version}, this spl reads up to {SCHEMA_VERSION}); upgrade spl"
        )


def _probe_records(connection: apsw.Connection, path: Path) -> None:
    lowest = _scalar(connection, "SELECT MIN(seq) FROM records")
    highest = _scalar(connection, "SELECT MAX(seq) FROM records")
    if lowest is None or highest is None:
        return
    span = max(1, int(highest) - int(lowest))
    targets = sorted({int(lowest) + span * index // (_SAMPLES - 1) for index in range(_SAMPLES)})
    # A store from before schema 4 (or whose index names another set of reserved threads) is checked
    # before connect_writer (re)builds the namespace index: probe it only when it is the one this spl reads.
    namespace_index = (
        _scalar(connection, "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'records_namespace'")
        == _NAMESPACE_INDEX
    )
    for target in targets:
        for seq, record_id, thread, actor, clock, namespace, text in connection.execute(
            "SELECT seq, id, thread, actor, clock, namespace, json FROM records WHERE seq >= ? ORDER BY seq LIMIT 1",
            (target,),
        ):
            _probe_one(connection, path, int(seq), record_id, thread, actor, int(clock), text)
            if namespace_index and thread not in RESERVED_THREADS:
                # The namespace feed walks only this index: an entry missing here is a record no pull serves.
                found = _scalar(
                    connection,
                    "SELECT seq FROM records INDEXED BY records_namespace "
                    f"WHERE namespace = ? AND seq = ? AND {NAMESPACE_FEED_TERM}",
                    (namespace, int(seq)),
                )
                if found is None or int(found) != int(seq):
                    raise StoreDamaged(
                        f"{path}: record {seq} is missing from records_namespace; "
                        "restore hub.db from a backup (see `spl doctor`)"
                    )


def _probe_one(
    connection: apsw.Connection, path: Path, seq: int, record_id: str, thread: str, actor: str, clock: int, text: str
) -> None:
    try:
        record = json.loads(text)
        consistent = record["id"] == record_id and record["sequence"] == seq and record["thread"] == thread
    except (ValueError, KeyError, TypeError):
        consistent = False
    if not consistent:
        raise StoreDamaged(f"{path}: record {seq} does not match its stored JSON; restore hub.db from a backup")
    # Each lookup reaches the row again through another b-tree; all must agree on its sequence.
    lookups = (
        ("the id index", "SELECT seq FROM records WHERE id = ?", (record_id,)),
        (
            "records_thread",
            "SELECT seq FROM records INDEXED BY records_thread WHERE thread = ? AND seq = ?",
            (thread, seq),
        ),
        ("records_actor", "SELECT seq FROM records INDEXED BY records_actor WHERE actor = ? AND seq = ?", (actor, seq)),
        (
            "records_clock",
            "SELECT seq FROM records INDEXED BY records_clock WHERE thread = ? AND actor = ? AND clock = ?",
            (thread, actor, clock),
        ),
        ("threads", "SELECT ? FROM threads WHERE thread = ? AND last_seq >= ?", (seq, thread, seq)),
    )
    for where, sql, bindings in lookups:
        found = _scalar(connection, sql, bindings)
        if found is None or int(found) != seq:
            raise StoreDamaged(
                f"{path}: record {seq} is missing from {where}; restore hub.db from a backup (see `spl doctor`)"
            )
