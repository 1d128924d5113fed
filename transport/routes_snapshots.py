"""Thread snapshots: ``GET /v1/threads/snapshot`` and ``POST /v1/threads/restore`` (spec §9, issue 11).

A snapshot is a few threads' records as ``.snap.jsonl`` (:mod:`spl.core.snapshot`): what an operator keeps
for forensics (seed 001, "Whole-pair recovery") and what ``spl thread restore`` feeds another daemon.

``GET /v1/threads/snapshot?threads=T1,T2`` needs ``records:read``, as ``GET /v1/records?thread=`` does; a
reserved thread (:mod:`spl.core.reserved`) is this instance's configuration, so it is served only to an
``admin`` caller. The records are read in ONE read transaction, so the file is a consistent cut even while
writers run, and streamed a page at a time: the daemon never holds a large thread in memory. The
transaction is held on a pooled connection across pages (each page is read in a worker thread) and given
back when the stream ends, however it ends. A failure after the answer has started cannot change its status:
the stream then ends with an error line instead of the manifest, which every reader refuses.

``POST /v1/threads/restore`` (``admin``) takes a snapshot as its body (``content-type:
application/x-ndjson``, at most :data:`MAX_RESTORE_BYTES`), verifies all of it before writing anything (any
failure: 4xx, nothing written), refuses reserved threads (configuration travels only in ``spl import``
bundles), and commits through the writer in batches, de-duplicating what is already stored.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import apsw
import trio
from quart import Blueprint, Response, request

from spl.core.errors import SplError
from spl.core.manifest import rfc3339
from spl.core.reserved import ReservedThread, is_reserved
from spl.core.snapshot import IdsDigest, manifest_line, parse_snapshot, split_threads
from spl.core.stored import Accepted
from spl.store.database import ReadPool
from spl.transport.auth import require, require_thread_readable
from spl.transport.context import services
from spl.transport.requests import body_bytes
from spl.transport.responses import json_response

__all__ = ["MAX_RESTORE_BYTES", "MAX_RESTORE_RECORDS", "MAX_UPLOAD_BYTES", "PAGE", "RESTORE_BATCH", "blueprint"]

blueprint = Blueprint("snapshots", __name__)

T = TypeVar("T")

PAGE = 1_000
"""Records read per worker-thread call while streaming a snapshot."""
RESTORE_BATCH = 1_000
"""Records per writer ingest on restore: one group commit each."""
MAX_RESTORE_BYTES = 64 * 1024 * 1024
"""The largest snapshot ``POST /v1/threads/restore`` reads (``spl.transport.app`` gives the route this body limit)."""
MAX_UPLOAD_BYTES = MAX_RESTORE_BYTES  # the name routes_portability uses for the same thing
MAX_RESTORE_RECORDS = 100_000
"""The most records one restore verifies and holds; move whole instances with ``spl export`` / ``spl import``."""
RECORD_OVERHEAD = 64 * 1024
"""A stored record is its emitted body (at most ``max_body_bytes``) plus envelope, signer and signature."""


class _ThreadReader:
    """One read transaction on one pooled connection, held across the pages of a snapshot.

    Each method runs in a worker thread, one at a time; :meth:`close` is idempotent and cheap (it ends a
    read transaction and gives the connection back), so it also runs from the stream's ``finally`` and
    from a finalizer when a response is dropped unread.
    """

    def __init__(self, pool: ReadPool) -> None:
        self._pool = pool
        self._stack = contextlib.ExitStack()
        self._connection: apsw.Connection | None = None

    def open(self) -> None:
        """Take a connection and begin the transaction; the first read pins what every later page sees."""
        self._connection = self._stack.enter_context(self._pool.connection())
        self._run(lambda c: list(c.execute("BEGIN; SELECT 1 FROM records LIMIT 1")))

    def page(self, thread: str, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` of ``thread``'s records after ``after_seq``, as ``(seq, stored JSON)``."""
        sql = "SELECT seq, json FROM records WHERE thread = ? AND seq > ? ORDER BY seq LIMIT ?"
        return self._run(lambda c: [(int(seq), str(text)) for seq, text in c.execute(sql, (thread, after_seq, limit))])

    def digest(self, threads: list[str]) -> tuple[int, str]:
        """``(count, records_sha256)`` of the threads' records, ids read back sorted (O(1) memory here)."""

        def run(connection: apsw.Connection) -> tuple[int, str]:
            digest = IdsDigest()
            sql = "SELECT id FROM records WHERE thread = ? ORDER BY id"
            cursors = [(str(row[0]) for row in connection.cursor().execute(sql, (thread,))) for thread in threads]
            for record_id in heapq.merge(*cursors):
                digest.add(record_id)
            return digest.count, digest.hexdigest()

        return self._run(run)

    def _run(self, query: Callable[[apsw.Connection], T]) -> T:
        assert self._connection is not None, "open() first"
        try:
            return query(self._connection)
        except Exception as exc:
            # End the transaction, then hand the failure to the pool's context manager: a damaged page
            # becomes STORE_CORRUPT there (and that connection is closed rather than pooled).
            with contextlib.suppress(apsw.Error):
                self._connection.execute("ROLLBACK")
            self._connection = None
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(apsw.Error):
            connection.execute("ROLLBACK")  # a read transaction: nothing to undo, only the snapshot to release
        self._stack.close()


def _refuse_reserved_to_non_admin(threads: list[str]) -> None:
    """A reserved thread is the instance's configuration: admin only, the rule of every read route."""
    for thread in threads:
        require_thread_readable(request.caller, thread)  # type: ignore[attr-defined]


@blueprint.get("/v1/threads/snapshot")
async def snapshot() -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    threads = split_threads(request.args.get("threads"))
    _refuse_reserved_to_non_admin(threads)
    svc = services()
    reader = _ThreadReader(svc.pool)
    await trio.to_thread.run_sync(reader.open)
    body = _stream(reader, threads, svc.identity.did)
    weakref.finalize(body, reader.close).atexit = False
    response = Response(body, content_type="application/x-ndjson")
    response.timeout = None  # a large thread takes as long as it takes; the client may stop reading at any time
    return response


async def _stream(reader: _ThreadReader, threads: list[str], did: str) -> AsyncIterator[bytes]:
    try:
        for thread in threads:
            after = 0
            while True:
                rows = await trio.to_thread.run_sync(reader.page, thread, after, PAGE)
                if rows:
                    yield "".join(text + "\n" for _, text in rows).encode("ascii")
                    after = rows[-1][0]
                if len(rows) < PAGE:
                    break
        count, digest = await trio.to_thread.run_sync(reader.digest, threads)
        yield manifest_line(
            threads, record_count=count, records_hash=digest, created_at=rfc3339(time.time()), source_did=did
        ).encode("ascii")
    except SplError as exc:
        # The status went out already: end with the error instead of a manifest, so no reader takes it as whole.
        yield (json_line(exc.to_wire()) + "\n").encode("ascii")
    finally:
        reader.close()


def json_line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


class RestoreReserved(ReservedThread):
    """A snapshot that carries a reserved thread: configuration travels only in signed ``spl import`` bundles."""

    def __init__(self, thread: str) -> None:
        SplError.__init__(
            self,
            f"{thread} is a reserved thread: it holds an instance's configuration, which travels only in "
            "`spl export` / `spl import` bundles, never in a snapshot restore. Snapshot the other threads "
            "without it and restore that",
        )


@blueprint.post("/v1/threads/restore")
async def restore() -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    svc = services()
    frozen = svc.fleet().error()  # the kill switch refuses a restore up front, like an import
    if frozen is not None:
        raise frozen
    data = await body_bytes(MAX_RESTORE_BYTES)
    parse = functools.partial(
        parse_snapshot,
        data,
        max_records=MAX_RESTORE_RECORDS,
        max_line_bytes=svc.config.max_body_bytes + RECORD_OVERHEAD,
    )
    snap = await trio.to_thread.run_sync(parse)
    for thread in snap.manifest.threads:
        if is_reserved(thread):
            raise RestoreReserved(thread)
    inserted = deduplicated = failed = 0
    refusals: Counter[str] = Counter()
    candidates = snap.candidates
    for start in range(0, len(candidates), RESTORE_BATCH):
        outcomes = await svc.writer.ingest(candidates[start : start + RESTORE_BATCH], park_rejected=True)
        for outcome in outcomes:
            if isinstance(outcome, Accepted):
                if outcome.created:
                    inserted += 1
                else:
                    deduplicated += 1
            else:
                failed += 1
                refusals[outcome.code] += 1
    return json_response(
        {
            "object": "restore_summary",
            "records_inspected": len(candidates),
            "records_inserted": inserted,
            "records_deduplicated": deduplicated,
            "records_failed": failed,
            "refusals_by_reason": dict(sorted(refusals.items())),
            "threads": list(snap.manifest.threads),
        }
    )
