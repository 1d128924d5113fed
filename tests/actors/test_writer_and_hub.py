"""The store writer and the SSE hub, in-process under a real supervisor and a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from spl.actors.hub import Hub, HubClient
from spl.actors.messages import Committed
from spl.actors.writer import StoreWriter, WriterClient
from spl.kernel.errors import DuplicateClock, NamespaceRejected
from spl.kernel.identity import Identity
from spl.kernel.ingest import Accepted, Candidate
from spl.kernel.queries import list_records
from spl.kernel.record import validate_envelope
from spl.kernel.store import connect_reader
from spl.runtime.supervisor import ChildSpec, Supervisor

IDENTITY = Identity.generate()


def candidate(
    thread: str, clock: int, *, actor: str = "did:test:w", body: dict[str, object] | None = None
) -> Candidate:
    envelope = validate_envelope({"act": "PUT", "actor": actor, "thread": thread, "clock": clock, "body": body or {}})
    return Candidate(envelope, IDENTITY.did, IDENTITY.sign_record_id(envelope.id))


async def test_concurrent_emits_share_commits_and_are_published_before_acks(tmp_path: Path) -> None:
    observed: list[Committed] = []
    tap_send, tap_receive = trio.open_memory_channel[object](1000)
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[tap_send])
    root = Supervisor("test", [ChildSpec("writer", writer.run, inbox_size=1000)])
    client = WriterClient(root.inbox("writer"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)

            async def emit(index: int) -> None:
                (outcome,) = await client.ingest([candidate("th_w", index)])
                assert isinstance(outcome, Accepted) and outcome.created
                # Published before acknowledged: the tap already holds this record.
                while True:
                    try:
                        observed.append(tap_receive.receive_nowait())  # type: ignore[arg-type]
                    except trio.WouldBlock:
                        break
                published = {r.id for message in observed for r in message.records}
                assert outcome.record.id in published

            async with trio.open_nursery() as emitters:
                for index in range(200):
                    emitters.start_soon(emit, index)
            root.shutdown()
    assert writer.batches_committed < 200  # group commit: many emits per transaction
    connection = connect_reader(tmp_path / "hub.db")
    stored = list_records(connection, thread="th_w", limit=1000)
    assert len(stored) == 200
    assert [r.seq for r in stored] == list(range(1, 201))


async def test_idempotent_duplicate_clock_and_namespace(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[])
    root = Supervisor("test", [ChildSpec("writer", writer.run, inbox_size=10)])
    client = WriterClient(root.inbox("writer"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            first = candidate("th_i", 1)
            (a,) = await client.ingest([first])
            (b,) = await client.ingest([first])
            assert isinstance(a, Accepted) and isinstance(b, Accepted)
            assert a.created and not b.created and a.record == b.record
            (clash,) = await client.ingest([candidate("th_i", 1, body={"other": True})])
            assert isinstance(clash, DuplicateClock)
            assert "DuplicateClock: thread=th_i actor=did:test:w clock=1" in clash.message
            (rejected,) = await client.ingest([candidate("th_i", 2, body={"namespace": "nowhere"})])
            assert isinstance(rejected, NamespaceRejected)
            root.shutdown()
    assert writer.head_sequence == 1


async def test_hub_delivers_in_order_and_marks_slow_subscribers_lagged(tmp_path: Path) -> None:
    hub = Hub()
    root = Supervisor("test", [ChildSpec("hub", hub.run, inbox_size=100)])
    client = HubClient(root.inbox("hub"), buffer=3)
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[root.inbox("hub")])
    await_writer = Supervisor("w", [ChildSpec("writer", writer.run, inbox_size=10)])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            await nursery.start(await_writer.run)
            fast = await client.subscribe("th_h")
            slow = await client.subscribe("th_h")
            other = await client.subscribe("th_other")
            wc = WriterClient(await_writer.inbox("writer"))
            for clock in range(1, 4):
                await wc.ingest([candidate("th_h", clock)])
            got = [(await fast.receive.receive()).seq for _ in range(3)]
            assert got == [1, 2, 3]
            await wc.ingest([candidate("th_h", 4)])  # fast has room again; slow's buffer of 3 is full
            assert (await fast.receive.receive()).seq == 4
            drained = [record.seq async for record in slow.receive]
            assert drained == [1, 2, 3] and slow.lagged
            with pytest.raises(trio.WouldBlock):
                other.receive.receive_nowait()
            await client.close_all()
            assert [r.seq async for r in fast.receive] == [] and fast.shutdown
            await_writer.shutdown()
            root.shutdown()
