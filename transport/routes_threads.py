"""Thread routes: listing, fold state, records, the live SSE watch (spec §3.7, §15.11), minting thread ids,
forking sub-threads, and a parent's tree and join status (seed 003, issue 12)."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Response, request

from spl.actors.hub import Subscription
from spl.core import tasks as task_fold
from spl.core.actor_registry import check_did
from spl.core.cursor import decode_cursor, encode_cursor
from spl.core.errors import InvalidRequest, NotFound
from spl.core.record import validate_thread
from spl.core.reserved import refuse_reserved
from spl.core.stored import StoredRecord
from spl.core.threadids import new_nonce, random_thread, sub_thread, task_thread
from spl.store import queries
from spl.transport import sse
from spl.transport.auth import reads_configuration, require, require_thread_readable
from spl.transport.context import caller, services
from spl.transport.requests import MAX_INT, int_arg, json_body
from spl.transport.responses import json_response, with_rfc3339_times
from spl.transport.routes_records import MAX_LIMIT, list_response
from spl.transport.routes_tasks import fork_children, join_view, tree_view
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
    return json_response(
        with_rfc3339_times({"object": "list", "data": threads, "has_more": has_more, "next_cursor": next_cursor})
    )


MAX_NONCE = 128


def _mint_request(payload: Any) -> tuple[str, dict[str, Any]]:
    """(thread, seed) for a ``POST /v1/threads`` body; every input bounded and checked."""
    if not isinstance(payload, dict):
        raise InvalidRequest("POST /v1/threads takes a JSON object ({} for a random thread id)")
    kind = payload.get("kind")
    allowed = {None: {"kind"}, "task": {"kind", "alias", "nonce"}, "sub": {"kind", "parent", "actor", "timestamp_us"}}
    if kind not in allowed:
        raise InvalidRequest("'kind' is 'task', 'sub', or left out for a random thread id", code="INVALID_KIND")
    unknown = sorted(str(key)[:40] for key in payload if key not in allowed[kind])
    if unknown:
        raise InvalidRequest(f"a {kind or 'random'} thread id does not take {', '.join(unknown[:5])}")
    if kind is None:
        return random_thread(), {"kind": "random"}
    if kind == "task":
        alias = task_fold.validate_alias(payload.get("alias"))
        nonce = payload.get("nonce")
        if nonce is None:
            nonce = new_nonce()
        elif not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE or not nonce.isprintable():
            raise InvalidRequest(f"'nonce' must be 1-{MAX_NONCE} printable characters", code="INVALID_NONCE")
        return task_thread(alias, nonce), {"kind": "task", "alias": alias, "nonce": nonce}
    parent = validate_thread(payload.get("parent"), "parent")
    actor = payload.get("actor")
    actor = services().local.did if actor is None else check_did(actor, "actor")
    stamp = payload.get("timestamp_us")
    if stamp is None:
        stamp = time.time_ns() // 1000
    elif type(stamp) is not int or not 0 <= stamp <= MAX_INT:
        raise InvalidRequest(f"'timestamp_us' must be an integer from 0 to {MAX_INT}", code="INVALID_TIMESTAMP")
    return sub_thread(parent, actor, stamp), {"kind": "sub", "parent": parent, "actor": actor, "timestamp_us": stamp}


@blueprint.post("/v1/threads")
async def mint_thread() -> Response:
    """Mint a thread id (seed 003 "Thread identity"); writes nothing, so the same inputs give the same id."""
    require(caller(), "threads:write")
    thread, seed = _mint_request(await json_body(services().config.max_body_bytes))
    return json_response({"object": "thread_id", "thread": thread, "seed": seed})


@blueprint.post("/v1/threads/<thread>/fork")
async def fork_thread(thread: str) -> Response:
    """Fork sub-threads from ``thread``: ``{"goals": [...], "join"?, "tasks"?: false}`` (201, the children)."""
    require(caller(), "threads:write")
    validate_thread(thread)
    refuse_reserved(thread)
    payload = await json_body(services().config.max_body_bytes)
    if not isinstance(payload, dict) or not set(payload) <= {"goals", "join", "tasks", "assignee"}:
        raise InvalidRequest("a fork takes a JSON object with 'goals' and optionally 'join', 'tasks', 'assignee'")
    as_tasks = payload.pop("tasks", False)
    if not isinstance(as_tasks, bool):
        raise InvalidRequest("'tasks' is true or false")
    return json_response(await fork_children(thread, payload, as_tasks=as_tasks), 201)


@blueprint.get("/v1/threads/<thread>/tree")
async def thread_tree(thread: str) -> Response:
    require(caller(), "records:read")
    validate_thread(thread)
    require_thread_readable(caller(), thread)
    return json_response(await tree_view(thread))


@blueprint.get("/v1/threads/<thread>/join")
async def thread_join(thread: str) -> Response:
    require(caller(), "records:read")
    validate_thread(thread)
    require_thread_readable(caller(), thread)
    view = await join_view(thread)
    if view["state"] is None:
        raise NotFound(f"thread {thread} has no records on this instance; list threads with `spl thread list`")
    return json_response(view)


@blueprint.get("/v1/threads/<thread>")
async def show_thread(thread: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    validate_thread(thread)
    require_thread_readable(request.caller, thread)  # type: ignore[attr-defined]
    view = await services().read(queries.thread_fold, thread)
    if view is None:
        raise NotFound(f"thread {thread} has no records on this instance")
    return json_response(with_rfc3339_times(view))


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
