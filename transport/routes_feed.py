"""Federation data routes: the change feed a peer pulls and signed-record push.

Spec §8.4 and §15.6: cursors are opaque ``s1.<sequence>`` strings, so a page boundary can
never split records that share a clock.

Reserved threads (spec §15.18) are configuration: the change feed never serves them and a
push never writes them (each such record is refused with ``RESERVED_THREAD``).
"""

from __future__ import annotations

import weakref
from typing import Any

import trio
from quart import Blueprint, Response, request

from spl.core.cursor import decode_cursor, encode_cursor
from spl.core.errors import InvalidRequest, SplError
from spl.core.record import validate_thread
from spl.core.reserved import is_reserved, refuse_reserved
from spl.core.stored import Accepted, Candidate, StoredRecord
from spl.core.verify import Refusal, verify_batch
from spl.store import queries
from spl.transport import sse
from spl.transport.auth import require_any
from spl.transport.context import caller, services
from spl.transport.requests import int_arg, json_body
from spl.transport.responses import json_response
from spl.transport.routes_threads import watch_stream

__all__ = ["blueprint"]

blueprint = Blueprint("feed", __name__)

MAX_PAGE = 10_000
PAGE_BYTES = 16 * 1024 * 1024  # a change page holds at most this much record JSON (and at least one record)
PAGE_CHUNK = 256  # rows read from the store at a time while filling a page
FEED_BUFFER = 16_384
LONGPOLL_MAX = 30.0


def _longpoll_seconds(value: str | None) -> float:
    """``timeout`` of a longpoll: seconds (decimals allowed), 0 to 30; 30 when absent."""
    if value is None or value == "":
        return LONGPOLL_MAX
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= LONGPOLL_MAX:
        raise InvalidRequest(
            "query parameter 'timeout' must be a number of seconds from 0 to 30", code="INVALID_PARAMETER"
        )
    return seconds


def _count_after(connection: Any, thread: str, after: int) -> int:
    for (count,) in connection.execute("SELECT COUNT(*) FROM records WHERE thread = ? AND seq > ?", (thread, after)):
        return int(count)
    return 0


def _page(connection: Any, thread: str, after: int, limit: int) -> tuple[list[StoredRecord], bool, int]:
    """Up to ``limit`` records after ``after``, and at most ``PAGE_BYTES`` of them (at least one).

    Read in chunks, so neither a big ``limit`` nor big records make one request hold
    gigabytes (10,000 records of 1 MiB each used to be read into memory at once); a page cut
    short by the byte budget says ``has_more`` and the reader simply asks again.
    """
    rows: list[StoredRecord] = []
    size = 0
    last = after
    while len(rows) < limit:
        want = min(PAGE_CHUNK, limit - len(rows))
        chunk = queries.records_after(connection, thread, last, want)
        for record in chunk:
            if rows and size + len(record.json) > PAGE_BYTES:
                return rows, True, _count_after(connection, thread, rows[-1].seq)
            rows.append(record)
            size += len(record.json)
        if len(chunk) < want:
            return rows, False, 0  # the end of the thread
        last = chunk[-1].seq
    has_more = bool(queries.records_after(connection, thread, last, 1))
    return rows, has_more, _count_after(connection, thread, last) if has_more else 0


def _page_json(records: list[StoredRecord], after: int, has_more: bool, pending: int) -> str:
    items = ",".join(f'{{"id":"{r.id}","record":{r.json}}}' for r in records)
    cursor = encode_cursor(records[-1].seq if records else after)
    return (
        f'{{"object":"sync_changes","records":[{items}],"next_cursor":"{cursor}",'
        f'"has_more":{"true" if has_more else "false"},"pending":{pending}}}'
    )


@blueprint.get("/v1/sync/changes")
async def changes() -> Response:
    require_any(caller(), ("federation:sync", "records:read"))
    thread = validate_thread(request.args.get("thread"), "thread (query parameter)")
    refuse_reserved(thread)
    header = request.headers.get("last-event-id")
    after = decode_cursor(request.args.get("since"))
    feed = request.args.get("feed", "normal")
    if feed == "continuous":
        resumed = sse.parse_cursor(header)
        if resumed is not None:
            after = resumed
        # A peer's pair drains in pages when it falls behind, but a deeper buffer means
        # it rarely has to: bursts are absorbed instead of ending the stream as lagged.
        subscription = await services().hub.subscribe(thread, buffer=FEED_BUFFER)
        body = watch_stream(services(), subscription, after, None)
        # A body that never starts (the peer left before the headers went out) never runs the
        # generator's ``finally``: release the subscription when the generator is freed.
        weakref.finalize(body, services().hub.unsubscribe, subscription).atexit = False
        response = Response(
            body,
            content_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )
        response.timeout = None
        return response
    if feed not in ("normal", "longpoll"):
        raise InvalidRequest("feed must be normal, longpoll or continuous", code="INVALID_PARAMETER")
    limit = int_arg("limit", 1000, minimum=1, maximum=MAX_PAGE) or 1000
    records, has_more, pending = await services().read(_page, thread, after, limit)
    if not records and feed == "longpoll":
        wait = _longpoll_seconds(request.args.get("timeout"))
        subscription = await services().hub.subscribe(thread)
        try:
            records, has_more, pending = await services().read(_page, thread, after, limit)
            if not records:
                with trio.move_on_after(wait):
                    try:
                        await subscription.take()
                    except trio.EndOfChannel:
                        pass
                records, has_more, pending = await services().read(_page, thread, after, limit)
        finally:
            services().hub.unsubscribe(subscription)
    return json_response(_page_json(records, after, has_more, pending))


@blueprint.post("/v1/sync/records")
async def push_records() -> Response:
    require_any(caller(), ("federation:sync", "records:write"))
    payload = await json_body(services().config.max_body_bytes)
    raws = payload.get("records") if isinstance(payload, dict) else None
    if not isinstance(raws, list) or len(raws) > MAX_PAGE:
        raise InvalidRequest('send {"records": [signed record, …]} (at most 10000)', code="INVALID_REQUEST")
    if request.headers.get("x-syncropel-federation") == "1":
        unsigned = sum(1 for r in raws if not (isinstance(r, dict) and r.get("sig") and r.get("signer")))
        if unsigned:
            raise InvalidRequest(
                f"{unsigned} record(s) carry no signer/sig; federation pushes must be signed",
                code="SIGNATURE_REQUIRED",
                status=422,
            )
    allowed = [r for r in raws if not (isinstance(r, dict) and is_reserved(r.get("thread")))]
    refused = [
        Refusal(str(r.get("id"))[:64], "RESERVED_THREAD", f"{r['thread']} is a reserved thread").to_wire()
        for r in raws
        if isinstance(r, dict) and is_reserved(r.get("thread"))
    ]
    results = await trio.to_thread.run_sync(verify_batch, allowed)
    candidates = [r for r in results if isinstance(r, Candidate)]
    refused += [r.to_wire() for r in results if isinstance(r, Refusal)]
    outcomes = await services().writer.ingest(candidates, park_rejected=True)
    accepted: list[str] = []
    duplicates: list[str] = []
    for candidate, outcome in zip(candidates, outcomes, strict=True):
        if isinstance(outcome, Accepted):
            (accepted if outcome.created else duplicates).append(outcome.record.id)
        elif isinstance(outcome, SplError):
            refused.append({"id": candidate.envelope.id, "code": outcome.code, "reason": outcome.message})
    return json_response(
        {"object": "sync_ingest_result", "accepted": accepted, "duplicates": duplicates, "refused": refused}
    )
