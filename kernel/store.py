"""The record store: one SQLite file (apsw, WAL, ``synchronous=FULL``).

Everything here is synchronous and owns no threads: the store-writer actor calls the
write side through ``trio.to_thread.run_sync`` on its single write connection, and
readers use :class:`ReadPool` connections the same way. A record's stored JSON is the
exact ASCII-only object served on every read path (HTTP lists, SSE, federation), so
reads splice text instead of re-encoding.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from spl.kernel.record import Envelope

__all__ = ["SCHEMA_VERSION", "ReadPool", "StoredRecord", "connect_reader", "connect_writer", "stored_json"]

SCHEMA_VERSION = 1

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
    created_at REAL NOT NULL
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
    updated_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_cursors (
    pair_id    TEXT PRIMARY KEY,
    cursor     INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_id   TEXT PRIMARY KEY,
    env        TEXT NOT NULL,
    sa_id      TEXT NOT NULL,
    label      TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record: its sequence and the exact JSON text every reader serves."""

    seq: int
    id: str
    thread: str
    json: str


def stored_json(envelope: Envelope, *, signer: str, sig: str, seq: int, created_at: float) -> str:
    """The served form of a record: full fields, signature, sequence; ASCII-only JSON.

    ASCII-only matters for SSE: a raw U+2028 inside a data line is split by the SDK's
    ``splitlines()`` and the record would be lost (spec §3.7).
    """
    record: dict[str, Any] = {"object": "record", **envelope.fields()}
    if envelope.judged_by is not None:
        record["judged_by"] = envelope.judged_by
    record["namespace"] = envelope.namespace
    record["signer"] = signer
    record["sig"] = sig
    record["sequence"] = seq
    record["created_at"] = _rfc3339(created_at)
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _rfc3339(timestamp: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{seconds}.{int(timestamp % 1 * 1_000_000):06d}Z"


def _configure(connection: apsw.Connection) -> None:
    connection.setbusytimeout(10_000)
    connection.execute("PRAGMA foreign_keys=ON")


def connect_writer(path: Path) -> apsw.Connection:
    """The single write connection: WAL, ``synchronous=FULL`` (ack only after a durable COMMIT)."""
    connection = apsw.Connection(str(path))
    _configure(connection)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(_SCHEMA)
    connection.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return connection


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

    @contextmanager
    def connection(self) -> Iterator[apsw.Connection]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = connect_reader(self._path)
        try:
            yield connection
        finally:
            with self._lock:
                if len(self._idle) < self._size:
                    self._idle.append(connection)
                    connection = None
            if connection is not None:
                connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- queries (run these in a worker thread) ---------------------------------------

    def query(self, sql: str, bindings: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connection() as connection:
            return list(connection.execute(sql, bindings))
