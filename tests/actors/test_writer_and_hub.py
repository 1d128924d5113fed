"""The store writer and the SSE hub, in-process under a real supervisor and a real SQLite file."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from spl.actors.hub import Hub, HubClient
from spl.actors.messages import Committed, Ingest, Reply
from spl.actors.writer import StoreWriter, WriterClient, in_worker_thread
from spl.core.errors import DuplicateClock, InvalidRequest, NamespaceRejected, SplError, StorageFull
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import Envelope, validate_envelope
from spl.core.stored import Accepted, Candidate, Outcome, StoredRecord
from spl.runtime.supervisor import ChildSpec, Supervisor
from spl.store.database import connect_reader, connect_writer
from spl.store.queries import list_records, pair_cursors, parked_count

IDENTITY = Identity.generate()
PEER = Identity.generate()


def candidate(
    thread: str, clock: int, *, actor: str = "did:test:w", body: dict[str, object] | None = None
) -> Candidate:
    envelope = validate_envelope({"act": "PUT", "actor": actor, "thread": thread, "clock": clock, "body": body or {}})
    return Candidate(envelope, IDENTITY.did, IDENTITY.sign_record_id(envelope.id))


async def test_concurrent_emits_share_commits_and_are_published_before_acks(tmp_path: Path) -> None:
    observed: list[Committed] = []
    tap_send, tap_receive = trio.open_memory_channel[object](1000)
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[tap_send], own_did=IDENTITY.did)
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
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[], own_did=IDENTITY.did)
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
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[root.inbox("hub")], own_did=IDENTITY.did)
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


def _stored(seq: int, thread: str, size: int = 10) -> StoredRecord:
    """A committed record as the writer publishes it, ``size`` bytes of JSON or a little more."""
    return StoredRecord(seq, f"{seq:064x}", thread, '{"pad":"' + "x" * size + '"}')


async def test_hub_bounds_each_subscriber_by_bytes_too(tmp_path: Path) -> None:
    """A reader holding more than ``max_bytes`` is lagged even with room for more records;
    a single record bigger than the bound still reaches a reader with nothing waiting."""
    hub = Hub()
    root = Supervisor("test", [ChildSpec("hub", hub.run, inbox_size=100)])
    inbox = root.inbox("hub")
    client = HubClient(inbox, buffer=100, max_bytes=1000)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            attentive = await client.subscribe("th_b")
            idle = await client.subscribe("th_b")
            await inbox.send(Committed([_stored(1, "th_b", size=5000)]))
            assert (await attentive.take()).seq == 1 and attentive.queued_bytes == 0
            await inbox.send(Committed([_stored(2, "th_b")]))
            await client.subscribe("th_barrier")  # answered once the hub has handled everything before it
            assert (await attentive.take()).seq == 2 and not attentive.lagged
            assert idle.lagged and idle.queued_bytes > 1000 - 10
            assert [record.seq async for record in idle.receive] == [1]  # closed: nothing more comes
            root.shutdown()


async def test_hub_counts_subscribers_and_forgets_every_ended_one(tmp_path: Path) -> None:
    hub = Hub()
    root = Supervisor("test", [ChildSpec("hub", hub.run, inbox_size=100)])
    inbox = root.inbox("hub")
    client = HubClient(inbox, buffer=2)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            subs = [await client.subscribe("th_c") for _ in range(3)] + [await client.subscribe("th_d")]
            assert hub.subscriber_count == 4 and client.stats() == {"open": 4, "lagged_total": 0}
            await inbox.send(Committed([_stored(seq, "th_c") for seq in (1, 2, 3)]))  # buffers of 2: all lag
            barrier = await client.subscribe("th_barrier")
            assert hub.subscriber_count == 2  # th_d and the barrier: lagged ones are gone at once
            for subscription in subs + [barrier]:
                client.unsubscribe(subscription)
                client.unsubscribe(subscription)  # a stream's end and its garbage collection may both call it
            await client.subscribe("th_barrier")
            assert hub.subscriber_count == 1
            assert client.stats() == {"open": 1, "lagged_total": 3}
            root.shutdown()


def _restarts(root: Supervisor, child: str) -> int:
    (snapshot,) = [c for c in root.snapshot().children if c.id == child]
    return snapshot.restarts


def _poisoned(thread: str) -> Candidate:
    """A candidate that passed no validation: its clock does not fit SQLite's INTEGER, so the insert raises."""
    envelope = Envelope(
        id="f" * 64, act="PUT", actor="did:test:w", body={}, clock=2**64, data_type="SCALAR", parents=[], thread=thread
    )
    return Candidate(envelope, IDENTITY.did, IDENTITY.sign_record_id(envelope.id))


async def test_a_poisoned_request_fails_alone_and_the_writer_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One request that makes the group commit raise fails alone; the others in its batch commit."""
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[], own_did=IDENTITY.did)
    root = Supervisor("test", [ChildSpec("writer", writer.run, inbox_size=16)])
    inbox = root.inbox("writer")
    replies: list[Reply[list[Outcome]]] = [Reply() for _ in range(4)]
    # Queued before the writer starts, so the four are drained into one group commit.
    inbox.send_nowait(Ingest([candidate("th_p", 1)], replies[0]))
    # The historical crash: an SSE id above 2^63-1 as an integer cursor.
    bad_cursor: Any = ("pair_0123456789abcdef", 2**64)
    inbox.send_nowait(Ingest([candidate("th_p", 2)], replies[1], bad_cursor))
    inbox.send_nowait(Ingest([_poisoned("th_p")], replies[2]))
    inbox.send_nowait(Ingest([candidate("th_p", 3)], replies[3]))
    caplog.set_level(logging.WARNING, logger="spl.writer")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            (first,) = await replies[0].get()
            (fourth,) = await replies[3].get()
            assert isinstance(first, Accepted) and first.created
            assert isinstance(fourth, Accepted) and fourth.created
            with pytest.raises(InvalidRequest) as cursor_error:
                await replies[1].get()
            assert cursor_error.value.code == "INVALID_CURSOR"
            with pytest.raises(SplError) as poisoned:
                await replies[2].get()
            assert poisoned.value.status == 500 and "see the daemon log" in poisoned.value.message
            # Still the same incarnation, and it keeps committing.
            (later,) = await WriterClient(inbox).ingest([candidate("th_p", 4)])
            assert isinstance(later, Accepted) and later.created
            assert _restarts(root, "writer") == 0
            root.shutdown()
    tracebacks = [r for r in caplog.records if r.name == "spl.writer" and r.exc_info is not None]
    assert len(tracebacks) == 1 and isinstance(tracebacks[0].exc_info[1], OverflowError)  # type: ignore[index]
    assert writer.requests_failed == 2
    stored = list_records(connect_reader(tmp_path / "hub.db"), thread="th_p")
    assert [r.id for r in stored] == [first.record.id, fourth.record.id, later.record.id]
    assert [r.seq for r in stored] == [1, 2, 3]  # the rolled-back attempt left no gap
    assert pair_cursors(connect_reader(tmp_path / "hub.db")) == {}


async def test_peer_cursor_is_saved_as_the_peer_gave_it(tmp_path: Path) -> None:
    """An SSE id above 2^63-1 is just a string now: stored and read back unchanged, last write wins."""
    writer = StoreWriter(tmp_path / "hub.db", subscribers=[], own_did=IDENTITY.did)
    root = Supervisor("test", [ChildSpec("writer", writer.run, inbox_size=16)])
    client = WriterClient(root.inbox("writer"))
    huge = str(2**64)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            await client.ingest([candidate("th_c", 1)], cursor=("pair_0123456789abcdef", huge))
            assert pair_cursors(connect_reader(tmp_path / "hub.db")) == {"pair_0123456789abcdef": huge}
            await client.ingest([], cursor=("pair_0123456789abcdef", "opaque/cursor=7"))
            with pytest.raises(InvalidRequest):
                await client.ingest([], cursor=("pair_0123456789abcdef", "x" * 257))
            root.shutdown()
    assert pair_cursors(connect_reader(tmp_path / "hub.db")) == {"pair_0123456789abcdef": "opaque/cursor=7"}
    assert _restarts(root, "writer") == 0


async def test_storage_full_fails_the_batch_with_503_and_writes_resume_when_there_is_room(tmp_path: Path) -> None:
    """SQLITE_FULL (here: the ``max_bytes`` cap) answers 503 STORAGE_FULL; the writer stays up, reads work."""
    path = tmp_path / "hub.db"
    setup = connect_writer(path)  # the store's size, ballast included, decides the cap
    setup.execute("CREATE TABLE ballast(pad BLOB)")
    setup.execute("INSERT INTO ballast VALUES (zeroblob(65536))")
    setup.close()
    page_size = 4096
    cap = path.stat().st_size + 8 * page_size
    writer = StoreWriter(path, subscribers=[], own_did=IDENTITY.did, max_bytes=cap)
    root = Supervisor("test", [ChildSpec("writer", writer.run, inbox_size=64)])
    client = WriterClient(root.inbox("writer"))
    acknowledged: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            full: StorageFull | None = None
            for clock in range(1, 1000):
                try:
                    (outcome,) = await client.ingest([candidate("th_full", clock, body={"pad": "x" * 3000})])
                except StorageFull as exc:
                    full = exc
                    break
                assert isinstance(outcome, Accepted)
                acknowledged.append(outcome.record.id)
            assert full is not None and full.status == 503 and full.code == "STORAGE_FULL"
            assert "free disk space" in full.message.lower() and "[store] max_bytes" in full.message
            assert writer.problem is not None and "STORAGE_FULL" in writer.problem
            # A whole batch of concurrent writes: each one is answered 503, none hangs, nothing crashes.
            errors: list[BaseException] = []

            async def emit(clock: int) -> None:
                try:
                    await client.ingest([candidate("th_full", clock, body={"pad": "y" * 3000})])
                except StorageFull as exc:
                    errors.append(exc)

            async with trio.open_nursery() as emitters:
                for clock in range(2000, 2010):
                    emitters.start_soon(emit, clock)
            assert len(errors) == 10
            # Reads never needed the writer.
            assert [r.id for r in list_records(connect_reader(path), thread="th_full", limit=1000)] == acknowledged

            # The operator makes room (here: drops ballast, whose pages the store reuses); the very next
            # write succeeds.
            def make_room() -> None:
                operator = connect_writer(path)
                operator.execute("DELETE FROM ballast")
                operator.close()

            await trio.to_thread.run_sync(make_room)
            (after,) = await client.ingest([candidate("th_full", 5000, body={"pad": "z" * 3000})])
            assert isinstance(after, Accepted) and after.created
            assert writer.problem is None
            assert _restarts(root, "writer") == 0
            root.shutdown()
    stored = [r.id for r in list_records(connect_reader(path), thread="th_full", limit=1000)]
    assert stored == [*acknowledged, after.record.id]


def _registration(identity: Identity, namespace: str, clock: int) -> Candidate:
    envelope = validate_envelope(
        {
            "act": "LEARN",
            "actor": identity.did,
            "thread": REGISTRY_THREAD,
            "clock": clock,
            "body": {"kind": NAMESPACE_KIND, "namespace_id": namespace, "status": "active"},
        }
    )
    return Candidate(envelope, identity.did, identity.sign_record_id(envelope.id))


def _peer_record(thread: str, clock: int, namespace: str) -> Candidate:
    envelope = validate_envelope(
        {"act": "PUT", "actor": PEER.did, "thread": thread, "clock": clock, "body": {"namespace": namespace}}
    )
    return Candidate(envelope, PEER.did, PEER.sign_record_id(envelope.id))


async def test_a_parked_record_is_applied_and_published_once_its_namespace_is_registered(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    tap_send, tap_receive = trio.open_memory_channel[object](100)
    writer = StoreWriter(path, subscribers=[tap_send], own_did=IDENTITY.did)
    root = Supervisor("test", [ChildSpec("writer", writer.run, inbox_size=16)])
    client = WriterClient(root.inbox("writer"))
    pulled = _peer_record("th_lab", 1, "lab")
    published: list[str] = []

    async def published_until(record_id: str) -> None:
        while record_id not in published:
            message = await tap_receive.receive()
            assert isinstance(message, Committed)
            published.extend(r.id for r in message.records)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            (refused,) = await client.ingest([pulled], cursor=("pair_0123456789abcdef", "s1.9"), park_rejected=True)
            assert isinstance(refused, NamespaceRejected) and "parked" in refused.message
            assert parked_count(connect_reader(path)) == 1
            # Someone else's registration changes nothing (spec §15.18): the record stays parked.
            (foreign,) = await client.ingest([_registration(PEER, "lab", 1)])
            assert isinstance(foreign, Accepted) and foreign.created
            # The instance registers the namespace itself: the parked record follows.
            (own,) = await client.ingest([_registration(IDENTITY, "lab", 1)])
            assert isinstance(own, Accepted) and own.created
            await published_until(pulled.envelope.id)
            # One more commit proves nothing else (no second copy) was queued before it.
            (marker,) = await client.ingest([candidate("th_marker", 1)])
            assert isinstance(marker, Accepted)
            await published_until(marker.record.id)
            root.shutdown()
    assert published.count(pulled.envelope.id) == 1
    reader = connect_reader(path)
    stored = list_records(reader, thread="th_lab")
    assert [r.id for r in stored] == [pulled.envelope.id]
    assert f'"signer":"{PEER.did}"' in stored[0].json  # still the peer's record, not re-signed
    assert parked_count(reader) == 0 and writer.parked_applied == 1
    assert pair_cursors(reader) == {"pair_0123456789abcdef": "s1.9"}


async def test_work_handed_to_a_worker_thread_comes_back_as_its_value_or_its_exception() -> None:
    assert await in_worker_thread(threading.get_ident) != threading.get_ident()

    def fails() -> None:
        raise ValueError("rolled back")

    with pytest.raises(ValueError, match="rolled back"):
        await in_worker_thread(fails)


async def test_a_cancel_waits_for_the_work_in_the_worker_thread() -> None:
    """A transaction is never left running behind the writer: the cancel lands once it returned."""
    release, finished = threading.Event(), []

    def transaction() -> str:
        release.wait(10)
        finished.append(True)
        return "committed"

    with trio.fail_after(10):
        with trio.CancelScope() as already:
            already.cancel()
            with pytest.raises(trio.Cancelled):
                await in_worker_thread(transaction)  # cancelled before it began: the work never starts
        assert finished == []
        answers: list[str] = []
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def commit() -> None:
                    answers.append(await in_worker_thread(transaction))
                    await trio.lowlevel.checkpoint()  # where the pending cancel is delivered

                nursery.start_soon(commit)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                release.set()
        assert scope.cancelled_caught
        assert answers == ["committed"] and finished == [True]
