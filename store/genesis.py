"""Writing the genesis records (``spl.core.genesis``) a store is missing, and telling them from data.

``spl init`` writes them for a new identity; a daemon starting on a home initialised by an older spl writes
them then. :func:`ensure_genesis` is idempotent: a reserved thread that already holds a genesis record signed by
this instance gets none. Each is committed through the writer's own path (``commit_batch``), so the thread
projections (row, fold, participants) are kept exactly as for any other record.

A genesis record is not "a record of its own" for ``spl import`` (``own_record_count``): a freshly initialised
steward must accept an import without ``--force-overwrite``. The ids of the genesis records this store wrote are
kept in ``meta`` (key :data:`GENESIS_META`), written *before* the commit: a crash between the two leaves an id
that matches no record, which counts for nothing, instead of a genesis record counted as data. Genesis records an
import brought are counted by the import's own counter, never here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection

import apsw

from spl.core.genesis import GENESIS_ACT, GENESIS_KIND, GENESIS_THREADS, genesis_envelope
from spl.core.identity import Identity
from spl.core.stored import Accepted, Candidate
from spl.store.database import write_transaction
from spl.store.ingest import commit_batch, load_writer_state

__all__ = ["GENESIS_META", "ensure_genesis", "missing_genesis", "own_genesis_count"]

GENESIS_META = "genesis_records"  # meta: JSON list of the ids of the genesis records this store wrote


def _wall_clock_micros() -> int:
    return time.time_ns() // 1000


def missing_genesis(connection: apsw.Connection, did: str, keys: Collection[str] = ()) -> list[str]:
    """The reserved threads that hold no genesis record by ``did`` signed by one of its ``keys`` (its rotation
    chain; default ``did``'s own key), in seed 003's order. A rotated instance wrote its genesis with an earlier
    key: that one still counts, so a rotation writes no second genesis."""
    missing = []
    signers = json.dumps(sorted(keys) or [did])
    for thread in GENESIS_THREADS:
        found = connection.execute(
            "SELECT 1 FROM records WHERE thread = ? AND actor = ? AND act = ? "
            "AND json_extract(json, '$.body.kind') = ? "
            "AND json_extract(json, '$.signer') IN (SELECT value FROM json_each(?)) LIMIT 1",
            (thread, did, GENESIS_ACT, GENESIS_KIND, signers),
        ).fetchall()
        if not found:
            missing.append(thread)
    return missing


def _next_clock(connection: apsw.Connection, thread: str, did: str, now: int) -> int:
    """Now, or past ``did``'s latest clock on ``thread`` if the wall clock is behind it: never a duplicate clock."""
    for (highest,) in connection.execute(
        "SELECT MAX(clock) FROM records WHERE thread = ? AND actor = ?", (thread, did)
    ):
        if highest is not None and int(highest) >= now:
            return int(highest) + 1
    return now


def _genesis_ids(connection: apsw.Connection) -> list[str]:
    for (value,) in connection.execute("SELECT value FROM meta WHERE key = ?", (GENESIS_META,)):
        try:
            ids = json.loads(value)
        except ValueError:
            return []
        return [item for item in ids if isinstance(item, str)] if isinstance(ids, list) else []
    return []


def ensure_genesis(
    connection: apsw.Connection, identity: Identity, *, now: Callable[[], int] = _wall_clock_micros
) -> int:
    """Write the genesis records ``identity`` has not signed yet; returns how many were stored.

    ``connection`` is a write connection with no transaction open and no other writer running (``spl init``, or
    a daemon before its store writer starts). Costs six indexed look-ups when nothing is missing.
    """
    did = identity.did  # the identifier (an InstanceIdentity's inception key) authors them; the current key signs
    keys: Collection[str] = getattr(identity, "own_keys", ())
    threads = missing_genesis(connection, did, keys)
    if not threads:
        return 0
    clock = now()
    candidates = []
    for thread in threads:
        envelope = genesis_envelope(thread, did, _next_clock(connection, thread, did, clock))
        candidates.append(Candidate(envelope, *identity.signed_id(envelope.id)))
    with write_transaction(connection):  # first: see the module docstring
        known = _genesis_ids(connection)
        known.extend(candidate.envelope.id for candidate in candidates if candidate.envelope.id not in known)
        connection.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (GENESIS_META, json.dumps(known)),
        )
    (outcomes,) = commit_batch(connection, [candidates], load_writer_state(connection, did, keys))
    return sum(1 for outcome in outcomes if isinstance(outcome, Accepted) and outcome.created)


def own_genesis_count(connection: apsw.Connection) -> int:
    """How many genesis records this store wrote itself (not brought by an import) it holds."""
    ids = _genesis_ids(connection)
    if not ids:
        return 0
    for (count,) in connection.execute(
        "SELECT COUNT(*) FROM records WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
    ):
        return int(count)
    return 0
