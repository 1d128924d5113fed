"""A page verified ahead of its commit (``ReconcilerClient.verify``, then ``commit``) ends as one reconciled whole.

Real reconciler under a real supervisor; the store writer is a fake that notes what it is asked to
commit, so the test sees the candidates and the cursor that reach the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from fed_support import sign_envelope

from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.core.identity import Identity
from spl.core.stored import Accepted, Candidate, Outcome, StoredRecord
from spl.runtime.supervisor import ChildSpec, Supervisor

PEER = Identity.generate()
OTHER = Identity.generate()
THREAD = "th_ahead"


@dataclass
class FakeWriter:
    """Accepts every candidate; notes each ingest as (record ids, cursor)."""

    ingests: list[tuple[list[str], tuple[str, str] | None]] = field(default_factory=list)

    async def ingest(
        self, candidates: list[Candidate], *, cursor: tuple[str, str] | None = None, park_rejected: bool = False
    ) -> list[Outcome]:
        self.ingests.append(([c.envelope.id for c in candidates], cursor))
        return [
            Accepted(StoredRecord(n, c.envelope.id, c.envelope.thread, "{}"), True) for n, c in enumerate(candidates)
        ]


def page() -> list[Any]:
    """Two honest records, one with a body altered after signing, one with a foreign signature, one junk."""
    good = [
        sign_envelope(PEER, {"act": "PUT", "actor": "did:test:a", "thread": THREAD, "clock": n, "body": {"n": n}})
        for n in (1, 2, 3, 4)
    ]
    altered = {**good[2], "body": {"n": "rewritten"}}
    foreign = {**good[3], "sig": OTHER.sign_record_id(good[3]["id"])}
    return [good[0], good[1], altered, foreign, "junk"]


@asynccontextmanager
async def reconciler() -> AsyncIterator[tuple[ReconcilerClient, Reconciler, FakeWriter]]:
    writer = FakeWriter()
    actor = Reconciler(writer)  # type: ignore[arg-type]
    root = Supervisor("test", [ChildSpec("reconciler", actor.run, inbox_size=8)])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            try:
                yield ReconcilerClient(root.inbox("reconciler"), actor), actor, writer
            finally:
                root.shutdown()


async def test_verify_then_commit_stores_and_refuses_what_reconcile_does() -> None:
    records = page()
    async with reconciler() as (client, actor, writer):
        whole = await client.reconcile("pair_a", records, "c1")
        verified = await client.verify(records)
        assert writer.ingests == [(writer.ingests[0][0], ("pair_a", "c1"))]  # verifying committed nothing
        ahead = await client.commit("pair_a", verified, "c2")
        assert actor.queue_depth == 0 and actor.queue_high_water >= len(records)
    assert [r.id for r in ahead.stored] == [r.id for r in whole.stored] == [records[0]["id"], records[1]["id"]]
    assert [(r.record_id, r.code) for r in ahead.refusals] == [(r.record_id, r.code) for r in whole.refusals]
    assert [r.code for r in ahead.refusals] == ["ID_MISMATCH", "SIGNATURE_INVALID", "INVALID_RECORD"]
    assert writer.ingests[1] == (writer.ingests[0][0], ("pair_a", "c2"))  # the same records, with the cursor


async def test_a_verified_page_with_nothing_to_store_still_moves_the_cursor() -> None:
    async with reconciler() as (client, _, writer):
        verified = await client.verify(["junk", {"id": "x"}])
        result = await client.commit("pair_b", verified, "c9")
    assert result.stored == [] and len(result.refusals) == 2
    assert writer.ingests == [([], ("pair_b", "c9"))]
