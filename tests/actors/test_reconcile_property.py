"""Property: whatever page a peer sends, the receiver stores exactly the verified records of the pair's thread.

The receiving path of a pair, without the network: :func:`screen_pulled` (thread and
reserved-thread screening), :func:`verify_batch` (id and signature) and
:func:`commit_batch` (the writer's transaction) on a real SQLite store. Hypothesis builds
pages that mix honest records with every kind of forgery and junk — altered bodies,
foreign signatures, wrong threads, reserved threads, non-objects, missing fields — and
the store must end up holding exactly the honest records of the pair's thread, each
once, with their original signer and sig, and nothing on a reserved thread; the
namespace registry never changes.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from fed_support import sign_envelope
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core.identity import Identity
from spl.core.reserved import RESERVED_THREADS
from spl.core.stored import Candidate
from spl.core.verify import screen_pulled, verify_batch
from spl.store.database import connect_writer
from spl.store.ingest import IngestRequest, commit_batch, load_writer_state

THREAD = "th_pulled"
OWN = Identity.generate()
PEER = Identity.generate()
OTHER = Identity.generate()


def honest(clock: int, text: str) -> dict[str, Any]:
    return sign_envelope(
        PEER, {"act": "PUT", "actor": "did:test:peer", "thread": THREAD, "clock": clock, "body": {"t": text}}
    )


# Each forgery takes an honest record (or a clock) and makes something that must not be stored.
def altered_body(record: dict[str, Any]) -> Any:
    return {**record, "body": {"t": "rewritten"}}


def foreign_signature(record: dict[str, Any]) -> Any:
    return {**record, "sig": OTHER.sign_record_id(record["id"])}


def claims_another_signer(record: dict[str, Any]) -> Any:
    return {**record, "signer": OTHER.did}


def wrong_thread(record: dict[str, Any]) -> Any:
    return sign_envelope(PEER, {k: record[k] for k in ("act", "actor", "clock", "body")} | {"thread": "th_elsewhere"})


def reserved(record: dict[str, Any]) -> Any:
    thread = sorted(RESERVED_THREADS)[record["clock"] % len(RESERVED_THREADS)]
    body = {"kind": "core.namespace.v1", "namespace_id": "evil", "status": "active"}
    return sign_envelope(
        PEER, {"act": "LEARN", "actor": "did:test:peer", "thread": thread, "clock": record["clock"], "body": body}
    )


def unsigned(record: dict[str, Any]) -> Any:
    return {key: value for key, value in record.items() if key not in ("sig", "signer")}


def junk(record: dict[str, Any]) -> Any:
    return [record["id"], None, 7, "record", {"id": record["id"]}][record["clock"] % 5]


EXAMPLES = itertools.count()  # one fresh store per example (tmp_path is shared by all of them)

FORGERIES = [altered_body, foreign_signature, claims_another_signer, wrong_thread, reserved, unsigned, junk]

PAGE = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # clock (small: repeats give duplicates and duplicate clocks)
        st.text(max_size=8),
        st.sampled_from([None, *FORGERIES]),  # None: the honest record itself
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.lists(PAGE, min_size=1, max_size=3))
def test_only_verified_records_of_the_pairs_thread_are_ever_stored(tmp_path: Path, pages: list[Any]) -> None:
    path = tmp_path / f"hub-{next(EXAMPLES)}.db"
    connection = connect_writer(path)
    try:
        state = load_writer_state(connection, OWN.did)
        expected: dict[str, dict[str, Any]] = {}
        taken: set[tuple[str, int]] = set()  # (actor, clock) already used by a stored honest record
        for number, page in enumerate(pages):
            raws: list[Any] = []
            for clock, text, forge in page:
                record = honest(clock, text)
                if forge is None:
                    raws.append(record)
                    key = ("did:test:peer", clock)
                    if record["id"] in expected or key not in taken:
                        expected.setdefault(record["id"], record)
                        taken.add(key)
                else:
                    raws.append(forge(record))
            kept, _ = screen_pulled(raws, THREAD)
            candidates = [result for result in verify_batch(kept) if isinstance(result, Candidate)]
            commit_batch(connection, [IngestRequest(candidates, cursor=("pair_00000000000000aa", f"c{number}"))], state)
        rows = list(connection.execute("SELECT id, thread, json FROM records"))
        stored = {record_id: json.loads(text) for record_id, _, text in rows}
        assert len(rows) == len(stored)  # each id once
        assert set(stored) == set(expected)
        for record_id, record in stored.items():
            assert record["thread"] == THREAD
            assert (record["signer"], record["sig"]) == (expected[record_id]["signer"], expected[record_id]["sig"])
        assert not any(thread in RESERVED_THREADS for _, thread, _ in rows)
        assert list(state.namespaces.entries) == ["default"]
        (cursor,) = next(iter(connection.execute("SELECT cursor FROM pair_cursors")))
        assert cursor == f"c{len(pages) - 1}"
    finally:
        connection.close()
