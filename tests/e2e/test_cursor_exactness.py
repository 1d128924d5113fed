"""The change feed of a real daemon (``GET /v1/sync/changes``): cursors are exact.

Cursors are built on the source's sequence (spec §15.6), so records that share a clock
can never be split or skipped by a page boundary, and records committed while a client
pages are picked up by a later page, never lost and never repeated.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio
from fed_support import envelope

from spl.daemon.launcher import DaemonProcess
from spl.transport.sse import SseEvent, SseParser

CLOCK = 1_000

# Abandoning an httpx stream mid-body leaves httpx's nested async generators to trio's GC
# hook, which closes them and warns (ResourceWarning): harmless, and unavoidable from here.
STREAM_LEAK = "ignore:Async generator 'http:ResourceWarning"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the module (auth off): every test uses its own threads."""
    process = DaemonProcess(tmp_path_factory.mktemp("cursor") / "home")
    process.start(port=0)
    yield process
    process.kill()


async def emit(client: httpx.AsyncClient, url: str, record: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{url}/v1/records", json=record)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def emit_many(client: httpx.AsyncClient, url: str, records: list[dict[str, Any]], workers: int = 8) -> list[Any]:
    """Emit concurrently; returns the stored records in sequence order."""
    stored: list[dict[str, Any]] = []

    async def worker(offset: int) -> None:
        for record in records[offset::workers]:
            stored.append(await emit(client, url, record))

    async with trio.open_nursery() as nursery:
        for offset in range(workers):
            nursery.start_soon(worker, offset)
    return sorted(stored, key=lambda record: record["sequence"])


async def changes(client: httpx.AsyncClient, url: str, thread: str, since: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{url}/v1/sync/changes", params={"thread": thread, "since": since, **params})
    assert response.status_code == 200, response.text
    page = dict(response.json())
    for item in page["records"]:
        assert item["id"] == item["record"]["id"] and item["record"]["thread"] == thread
    return page


def same_clock(thread: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    """``count`` different records on ``thread``, all with the same clock (one actor each)."""
    return [envelope(thread, CLOCK, actor=f"did:test:same{start + index}", n=start + index) for index in range(count)]


async def test_same_clock_records_page_exactly_once_in_sequence_order(daemon: DaemonProcess) -> None:
    thread = "th_same_clock"
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(60):
            # Noise on another thread makes this thread's sequences non-contiguous.
            mixed = [r for pair in zip(same_clock(thread, 45), same_clock("th_noise", 45), strict=True) for r in pair]
            stored = await emit_many(client, daemon.url, mixed)
            expected = [record for record in stored if record["thread"] == thread]
            assert len(expected) == 45 and {r["clock"] for r in expected} == {CLOCK}
            expected_ids = [record["id"] for record in expected]

            for limit in (1, 2, 7, 44, 45, 46, 1000):
                seen: list[str] = []
                since = ""
                while True:
                    page = await changes(client, daemon.url, thread, since, limit=limit)
                    ids = [item["id"] for item in page["records"]]
                    sequences = [item["record"]["sequence"] for item in page["records"]]
                    assert sequences == sorted(sequences) and len(ids) <= limit
                    seen.extend(ids)
                    remaining = len(expected_ids) - len(seen)
                    assert page["has_more"] is (remaining > 0), (limit, page["has_more"], remaining)
                    assert page["pending"] == (remaining if page["has_more"] else 0), (limit, page["pending"])
                    assert page["next_cursor"] != since or not ids
                    since = page["next_cursor"]
                    if not page["has_more"]:
                        break
                assert seen == expected_ids, f"limit {limit}: ids out of order, missing or repeated"
                # At the head: an empty page that keeps the cursor.
                tail = await changes(client, daemon.url, thread, since, limit=limit)
                assert tail["records"] == [] and tail["has_more"] is False and tail["pending"] == 0
                assert tail["next_cursor"] == since


async def test_records_committed_between_page_fetches_are_neither_skipped_nor_repeated(
    daemon: DaemonProcess,
) -> None:
    thread = "th_interleave"
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(60):
            emitted = [r["id"] for r in await emit_many(client, daemon.url, same_clock(thread, 10))]
            seen: list[str] = []
            since = ""
            batch = 0
            while True:
                page = await changes(client, daemon.url, thread, since, limit=4)
                seen.extend(item["id"] for item in page["records"])
                since = page["next_cursor"]
                if batch < 8:  # commit three more (same clock again) before the next fetch
                    fresh = await emit_many(client, daemon.url, same_clock(thread, 3, start=100 + 3 * batch), workers=3)
                    emitted.extend(r["id"] for r in fresh)
                    batch += 1
                    continue
                if not page["has_more"]:
                    break
            assert len(seen) == len(set(seen)) == len(emitted) == 34
            assert seen == emitted  # sequence order = commit order


async def test_a_pager_racing_concurrent_writers_sees_every_record_once(daemon: DaemonProcess) -> None:
    thread = "th_race"
    total = 240
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20)) as client:
        with trio.fail_after(90):
            done = trio.Event()
            stored: list[dict[str, Any]] = []

            async def writers() -> None:
                stored.extend(await emit_many(client, daemon.url, same_clock(thread, total), workers=6))
                done.set()

            seen: list[dict[str, Any]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writers)
                since = ""
                while True:
                    finished = done.is_set()  # read before the fetch: a page after the last commit must follow
                    page = await changes(client, daemon.url, thread, since, limit=7)
                    seen.extend(item["record"] for item in page["records"])
                    since = page["next_cursor"]
                    if finished and not page["has_more"]:
                        break
                    if not page["records"]:
                        await trio.sleep(0.005)  # polling interval of this pager
            ids = [record["id"] for record in seen]
            assert len(ids) == len(set(ids)) == total
            assert ids == [record["id"] for record in stored]
            assert [r["sequence"] for r in seen] == sorted(r["sequence"] for r in seen)


# -- longpoll ----------------------------------------------------------------------------------------


async def test_longpoll_returns_as_soon_as_a_record_commits(daemon: DaemonProcess) -> None:
    thread = "th_longpoll"
    sent = trio.Event()

    async def on_request(request: httpx.Request) -> None:
        sent.set()

    async with (
        httpx.AsyncClient(timeout=30) as client,
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=40), event_hooks={"request": [on_request]}) as poller,
    ):
        with trio.fail_after(30):
            await emit_many(client, daemon.url, same_clock(thread, 2))
            head = (await changes(client, daemon.url, thread, ""))["next_cursor"]
            result: dict[str, Any] = {}

            async def longpoll() -> None:
                response = await poller.get(
                    f"{daemon.url}/v1/sync/changes",
                    params={"thread": thread, "since": head, "feed": "longpoll", "timeout": 30},
                )
                result["page"] = response.json()
                result["at"] = time.monotonic()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(longpoll)
                await sent.wait()
                # A round trip on another connection: the longpoll request reached the daemon first.
                assert (await client.get(f"{daemon.url}/health")).status_code == 200
                assert "page" not in result, "the longpoll answered before anything was committed"
                record = await emit(client, daemon.url, envelope(thread, CLOCK, actor="did:test:late"))
                committed = time.monotonic()
            page = result["page"]
            assert [item["id"] for item in page["records"]] == [record["id"]]
            assert page["has_more"] is False and page["pending"] == 0 and page["next_cursor"] != head
            assert result["at"] - committed < 5.0, "longpoll waited for its timeout instead of the commit"


async def test_longpoll_without_news_waits_its_timeout_and_keeps_the_cursor(daemon: DaemonProcess) -> None:
    thread = "th_longpoll_idle"
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(30):
            await emit(client, daemon.url, envelope(thread, 1))
            head = (await changes(client, daemon.url, thread, ""))["next_cursor"]
            started = time.monotonic()
            page = await changes(client, daemon.url, thread, head, feed="longpoll", timeout=1)
            elapsed = time.monotonic() - started
            assert page["records"] == [] and page["next_cursor"] == head and page["has_more"] is False
            assert 0.9 <= elapsed < 10
            # Records already there: a longpoll answers at once.
            started = time.monotonic()
            page = await changes(client, daemon.url, thread, "", feed="longpoll", timeout=30)
            assert len(page["records"]) == 1 and time.monotonic() - started < 5


async def test_longpoll_ignores_commits_on_other_threads(daemon: DaemonProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(30):
            result: dict[str, Any] = {}

            async def longpoll() -> None:
                result["page"] = await changes(client, daemon.url, "th_quiet", "", feed="longpoll", timeout=1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(longpoll)
                for index in range(5):
                    await emit(client, daemon.url, envelope("th_busy", index + 1))
            assert result["page"]["records"] == []


# -- continuous feed ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def continuous(
    url: str, thread: str, since: str, headers: dict[str, str | bytes] | None = None
) -> AsyncIterator[trio.MemoryReceiveChannel[SseEvent]]:
    """Events of the continuous feed, read by a background task into a channel."""
    send, receive = trio.open_memory_channel[SseEvent](1000)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client,
        client.stream(
            "GET",
            f"{url}/v1/sync/changes",
            params={"thread": thread, "since": since, "feed": "continuous"},
            headers=headers or {},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")

        async def pump() -> None:
            parser = SseParser()
            async with send, contextlib.aclosing(response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    for event in parser.feed(chunk):
                        await send.send(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            yield receive
            nursery.cancel_scope.cancel()


async def next_record(events: trio.MemoryReceiveChannel[SseEvent]) -> tuple[int, str]:
    async for event in events:
        if event.event == "record.created":
            assert event.id is not None
            return int(event.id), json.loads(event.data)["id"]
    raise AssertionError("the stream ended")


@pytest.mark.filterwarnings(STREAM_LEAK)
async def test_continuous_feed_resumes_from_since_and_then_follows(daemon: DaemonProcess) -> None:
    thread = "th_continuous"
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(30):
            stored = await emit_many(client, daemon.url, same_clock(thread, 5), workers=1)
            cursor = (await changes(client, daemon.url, thread, "", limit=3))["next_cursor"]
            async with continuous(daemon.url, thread, cursor) as events:
                assert await next_record(events) == (stored[3]["sequence"], stored[3]["id"])
                assert await next_record(events) == (stored[4]["sequence"], stored[4]["id"])
                late = await emit(client, daemon.url, envelope(thread, CLOCK, actor="did:test:late"))
                assert await next_record(events) == (late["sequence"], late["id"])
            # From the start: everything, in order.
            async with continuous(daemon.url, thread, "") as events:
                everything = [await next_record(events) for _ in range(6)]
            assert [record_id for _, record_id in everything] == [r["id"] for r in [*stored, late]]
            # Last-Event-ID (an SSE reconnect) wins over since.
            async with continuous(daemon.url, thread, "", {"last-event-id": str(stored[2]["sequence"])}) as events:
                assert await next_record(events) == (stored[3]["sequence"], stored[3]["id"])


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"thread": "th_x", "since": "garbage"}, "INVALID_CURSOR"),
        ({"thread": "th_x", "since": "s1.-4"}, "INVALID_CURSOR"),
        ({"thread": "th_x", "feed": "firehose"}, "INVALID_PARAMETER"),
        ({"thread": "th_x", "limit": 0}, "INVALID_PARAMETER"),
        ({"thread": "th_x", "limit": 10_001}, "INVALID_PARAMETER"),
        ({"thread": "th_x", "limit": "many"}, "INVALID_PARAMETER"),
        ({"thread": "th x"}, "INVALID_THREAD"),
        ({}, "INVALID_THREAD"),
    ],
)
async def test_bad_change_feed_requests_are_400s_that_name_the_fix(
    daemon: DaemonProcess, params: dict[str, Any], code: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{daemon.url}/v1/sync/changes", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["object"] == "error" and body["code"] == code and body["message"]


@pytest.mark.filterwarnings(STREAM_LEAK)
@pytest.mark.parametrize("garbage", [b"\xb2", b"99999999999999999999999"], ids=["superscript-two", "huge"])
async def test_a_garbage_last_event_id_on_the_continuous_feed_is_ignored(daemon: DaemonProcess, garbage: bytes) -> None:
    thread = "th_garbage_leid_" + garbage.hex()[:8]
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(20):
            first = await emit(client, daemon.url, envelope(thread, 1))
            async with continuous(daemon.url, thread, "", {"last-event-id": garbage}) as events:
                assert await next_record(events) == (first["sequence"], first["id"])
