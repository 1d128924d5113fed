"""Thread routes: listing, fold state, records, and the live SSE watch (spec §3.7, §15.11)."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator

import trio
from quart import Blueprint, Response, request

from spl.actors.hub import Subscription
from spl.core.cursor import decode_cursor, encode_cursor
from spl.core.errors import NotFound
from spl.core.record import validate_thread
from spl.core.stored import StoredRecord
from spl.store import queries
from spl.transport import sse
from spl.transport.auth import reads_configuration, require, require_thread_readable
from spl.transport.context import services
from spl.transport.requests import int_arg
from spl.transport.responses import json_response
from spl.transport.routes_records import MAX_LIMIT, list_response
from spl.transport.services import Services

__all__ = ["blueprint"]

blueprint = Blueprint("threads", __name__)

REPLAY_PAGE = 500
# One SSE write carries at most this many records and about this many bytes. Building a
# write is one uninterrupted step of the event loop, and a stream whose client just left
# may still build one before it is cancelled: 100 such streams writing 256 records of
# 10 KiB each held every other request for seconds.
COALESCE = 256
COALESCE_BYTES = 64 * 1024
LAGGED_MESSAGE = "subscriber fell behind; reconnect with Last-Event-ID to resume"


@blueprint.get("/v1/threads")
async def list_threads() -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    limit = int_arg("limit", 100, minimum=1, maximum=MAX_LIMIT) or 100
    namespace = request.args.get("namespace") or None
    # Paging (most recent first): pass the previous page's next_cursor. A thread written to during the walk moves
    # ahead of the cursor and is not seen twice; the next listing from the start shows it.
    before = decode_cursor(request.args.get("cursor"))
    threads = await services().read(
        queries.list_threads,
        limit=limit + 1,
        namespace=namespace,
        before_seq=before,
        hide_reserved=not reads_configuration(request.caller),  # type: ignore[attr-defined]
    )
    has_more = len(threads) > limit
    threads = threads[:limit]
    next_cursor = encode_cursor(threads[-1]["last_sequence"]) if has_more else None
    return json_response({"object": "list", "data": threads, "has_more": has_more, "next_cursor": next_cursor})


@blueprint.get("/v1/threads/<thread>")
async def show_thread(thread: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    validate_thread(thread)
    require_thread_readable(request.caller, thread)  # type: ignore[attr-defined]
    view = await services().read(queries.thread_fold, thread)
    if view is None:
        raise NotFound(f"thread {thread} has no records on this instance")
    return json_response(view)


@blueprint.get("/v1/threads/<thread>/records")
async def thread_records(thread: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    validate_thread(thread)
    require_thread_readable(request.caller, thread)  # type: ignore[attr-defined]
    limit = int_arg("limit", 100, minimum=1, maximum=MAX_LIMIT) or 100
    since = int_arg("since", None)
    records = await services().read(queries.thread_records, thread, since_clock=since, limit=limit)
    return list_response(records)


@blueprint.get("/v1/threads/<thread>/watch")
async def watch(thread: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    validate_thread(thread)
    require_thread_readable(request.caller, thread)  # type: ignore[attr-defined]
    header = request.headers.get("last-event-id")
    cursor = sse.parse_cursor(header)
    since_clock = int_arg("since_clock", None) if header is None else None
    if header is not None and cursor is None:
        cursor = 0  # garbage cursor: replay the thread from its start (spec §15.11)
    # Subscribe before the headers go out: once the client sees the stream open (the SDK's
    # on_open), every later commit on the thread is guaranteed to reach it.
    subscription = await services().hub.subscribe(thread)
    body = watch_stream(services(), subscription, cursor, since_clock)
    # A body that never starts (the client left before the headers went out) never runs
    # the generator's ``finally``: release the subscription when the generator is freed.
    weakref.finalize(body, services().hub.unsubscribe, subscription).atexit = False
    response = Response(
        body,
        content_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
    response.timeout = None  # Quart would end the stream after 60 s otherwise
    return response


async def _replay(
    services: Services, thread: str, cursor: int | None, since_clock: int | None
) -> AsyncIterator[StoredRecord]:
    """Stored records after the cursor (or with clock > since_clock), in sequence order."""
    after = cursor or 0
    while True:
        if cursor is not None:
            page = await services.read(queries.records_after, thread, after, REPLAY_PAGE)
        else:
            page = await services.read(
                queries.list_records, thread=thread, since_clock=since_clock, after_seq=after, limit=REPLAY_PAGE
            )
        for record in page:
            yield record
        if len(page) < REPLAY_PAGE:
            return
        after = page[-1].seq


async def watch_stream(
    services: Services, subscription: Subscription, cursor: int | None, since_clock: int | None
) -> AsyncIterator[bytes]:
    """The SSE body over a registered subscription (the caller subscribed before responding).

    A lagged subscription ends the stream with ``event: error`` / ``lagged`` as soon as it
    is seen, without writing what is still buffered: the client resumes from its cursor
    anyway, and a reader that slow should not be fed more first (nor should a stream whose
    client is gone spend the event loop formatting records nobody will read).

    No cancel scope or nursery is held across a ``yield`` (runtime.md).
    """
    thread = subscription.thread
    try:
        last_seq = 0
        if cursor is not None or since_clock is not None:
            async for stored in _replay(services, thread, cursor, since_clock):
                last_seq = stored.seq
                yield sse.record_frame(stored)
        heartbeat = services.config.heartbeat_seconds
        while True:
            if subscription.lagged:
                yield sse.error_frame("lagged", LAGGED_MESSAGE)
                return
            record: StoredRecord | None = None
            ended = False
            with trio.move_on_after(heartbeat):
                try:
                    record = await subscription.take()
                except trio.EndOfChannel:
                    ended = True
            if ended:
                if subscription.lagged:
                    yield sse.error_frame("lagged", LAGGED_MESSAGE)
                else:
                    yield sse.shutdown_frame(200)
                return
            if record is None:
                yield sse.heartbeat_frame()
                continue
            # Whatever else is already buffered goes out in the same write: at hundreds of
            # records a second one socket send per record would dominate the stream's cost.
            frames: list[bytes] = []
            size = 0
            while True:
                if record.seq > last_seq:
                    last_seq = record.seq
                    frame = sse.record_frame(record)
                    frames.append(frame)
                    size += len(frame)
                if len(frames) >= COALESCE or size >= COALESCE_BYTES:
                    break  # check before taking another: a record taken must be written
                try:
                    record = subscription.take_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if frames:
                yield b"".join(frames)
    finally:
        services.hub.unsubscribe(subscription)
